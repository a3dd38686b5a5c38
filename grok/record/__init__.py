"""The run record: what a run folder holds and who may write it, the folder contract the project
exists to produce. Below the trainer, importing nothing of the project but leaves.

- `grok.record.files`: file names, atomic writes, strict JSON, a full disk as one line;
- `grok.record.identity`: which folder a job uses and which config a folder's run was made by;
- `grok.record.lock`: one process at a time in a folder (FolderLock, the FolderError family);
- `grok.record.checkpoint`: checkpoints and weight snapshots (torch; tensors only, never pickles);
- `grok.record.local`: config.yaml, metrics.jsonl and summary.json of a run, a failure's record;
- `grok.record.status`: the status of a job and of a sweep, read from their folders.

Importing this package imports none of them (the config check stays free of torch)."""

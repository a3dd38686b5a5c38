"""What a run trains on: the number formats it may use and whether its device is a GPU. One
registry of each, read by the config check (without torch), the trainer and the launchers."""

DTYPE_BYTES = {"float32": 4, "float64": 8}  # train.dtype: bytes per value (torch's itemsize)
DTYPES = tuple(DTYPE_BYTES)


def torch_dtype(name: str):
    """The torch dtype of a train.dtype name (torch is imported here only, when a run asks)."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def is_gpu(device) -> bool:
    """Is `device` (a train.device string such as cuda:1, or a torch.device) a CUDA GPU?"""
    return str(device).startswith("cuda")

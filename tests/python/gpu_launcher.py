"""Launches kernels and waits for the GPU through the CUDA runtime named by
argv[1], from Python code of a known shape (line numbers are part of it: the
profile tests look for them).

- `gpu_launcher.py LIBCUDART`: three quarters of the launches and of the waits
  under `prefill`, a quarter under `decode`, until killed (the stand-in runtime:
  every call succeeds, a synchronisation blocks for 1 ms).
- `gpu_launcher.py LIBCUDART --per-line`: for each line N read, N launches 20
  Python frames deep, then "done" (bench launch-stacks).
"""
import ctypes
import sys


class dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


cudart = ctypes.CDLL(sys.argv[1])
cudart.cudaLaunchKernel.argtypes = [
    ctypes.c_void_p, dim3, dim3, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
]
one = dim3(1, 1, 1)


def launch(n):
    for _ in range(n):
        cudart.cudaLaunchKernel(None, one, one, None, 0, None)


def prefill():
    launch(300)
    for _ in range(3):
        cudart.cudaDeviceSynchronize()


def decode():
    launch(100)
    cudart.cudaDeviceSynchronize()


def layer(depth, n):
    return launch(n) if depth == 0 else layer(depth - 1, n)


print("ready", flush=True)
if sys.argv[2:] == ["--per-line"]:
    for line in sys.stdin:
        layer(20, int(line))
        print("done", flush=True)
else:
    while True:
        prefill()
        decode()

"""The machine's FP32 matmul rate on 2 threads, in TensorFlow and in numpy.

The "peak" the layer's GFLOP/s is compared with: the median rate of a large
square float32 matmul (n=4096 by default), after warm-up.

    python benchmarks/peak_flops.py --size 4096
"""

import argparse
import os
import time

from bench_utils import THREADS, emit, median_ms, setup_tensorflow

# numpy's BLAS reads its thread count when numpy is first imported (here, by TensorFlow).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = str(THREADS)

tf = setup_tensorflow()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = args.size
    flops = 2 * n**3
    a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
    matmul = tf.function(tf.matmul)
    matmul(a, b).numpy()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    emit(benchmark="peak_flops", library="tensorflow", size=n, median_ms=median_ms(seconds),
         gflops_per_s=flops / 1e6 / median_ms(seconds), best_gflops_per_s=flops / 1e9 / min(seconds))
    a_np, b_np = a.numpy(), b.numpy()
    a_np @ b_np
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        a_np @ b_np
        seconds.append(time.perf_counter() - start)
    emit(benchmark="peak_flops", library="numpy", size=n, median_ms=median_ms(seconds),
         gflops_per_s=flops / 1e6 / median_ms(seconds), best_gflops_per_s=flops / 1e9 / min(seconds))


if __name__ == "__main__":
    main()

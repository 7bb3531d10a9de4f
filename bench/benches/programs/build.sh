#!/bin/sh
# Rebuilds the BPF objects of the benchmark programs (clang-19 and Debian's libbpf-dev headers).
set -eu
cd "$(dirname "$0")"
for src in *.c; do
    clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c "$src" -o "${src%.c}.o"
    echo "built ${src%.c}.o"
done

#!/bin/sh
# Rebuilds the BPF object of this directory from its C source.
# Needs clang-19 and libbpf's headers (Debian: clang-19, libbpf-dev).
set -eu
cd "$(dirname "$0")"
clang-19 -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu \
    -c malloc_count.bpf.c -o malloc_count.bpf.o
echo "built malloc_count.bpf.o"

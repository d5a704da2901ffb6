# SPDX-License-Identifier: Apache-2.0
# The cniprof image for cluster mode: the package with its prebuilt CO-RE BPF objects, and the traffic
# generators (iperf3, sockperf, wrk + nginx, ping). One image serves the agent DaemonSet, the ephemeral
# generator containers and the client/server pods of `trace --k8s --nodes`. Multi-arch:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/cniprof:0.1.0 --push .
# The build stage runs once, on the build machine (clang -target bpf does not need the target's CPU): it compiles
# the BPF objects for both machines (cniprof/bpf/obj/x86_64/, aarch64/) into one wheel, so no emulation runs
# there; each platform's runtime stage installs that wheel, and cniprof loads its own machine's objects.

ARG DEBIAN=debian:bookworm-slim

FROM --platform=$BUILDPLATFORM ${DEBIAN} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY bpf ./bpf
COPY cniprof ./cniprof
# the wheel's build step (setup.py) compiles bpf/*.bpf.c into cniprof/bpf/obj/<machine>/ for x86_64 and aarch64
RUN python3 -m venv /build \
 && /build/bin/pip wheel --no-cache-dir --no-deps -w /wheels .

FROM ${DEBIAN}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libbpf1 ca-certificates iproute2 \
      iptables ethtool iperf3 sockperf wrk nginx-light iputils-ping \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/cniprof \
 && /opt/cniprof/bin/pip install --no-cache-dir /wheels/cniprof-*.whl \
 && ln -s /opt/cniprof/bin/cniprof /usr/local/bin/cniprof \
 && rm -rf /wheels
# the agent DaemonSet overrides this with a waiting command; sessions are started by exec
CMD ["cniprof", "--help"]

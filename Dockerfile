# syntax=docker/dockerfile:1
#
# secretfs in a container: mounts a Vault/OpenBao folder for the containers
# next to it, through mount propagation.
#
#   docker build -t secretfs .
#   mkdir -p /run/secretfs/myapp/secrets
#   docker run -d --name secretfs-myapp \
#     --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
#     -v /run/secretfs/myapp:/run/myapp:rshared \
#     -v /etc/secretfs/myapp.token:/etc/secretfs/token:ro \
#     -e VAULT_ADDR=https://vault.example.com:8200 \
#     secretfs --token-file /etc/secretfs/token --allow-other --uid 1000 --gid 1000 \
#     secret/myapp /run/myapp/secrets
#   docker run -v /run/secretfs/myapp:/run/myapp:ro,rslave myapp   # reads /run/myapp/secrets/...
#
# The mount is read-only (the default; no --writable): the application reads
# its secrets and cannot change or delete them in Vault.
#
# The arguments are those of `secretfs mount` (the entrypoint), which stays in
# the foreground; `docker stop` (SIGTERM) unmounts and exits 0. The volume is
# the directory above the mount point, so that containers (and a restarted
# secretfs) see each new mount through it. docs/DEPLOY.md explains each flag;
# deploy/kubernetes/ has the Kubernetes equivalents.
#
# The process runs as root. Mounting needs CAP_SYS_ADMIN: root in the
# container gets it from --cap-add SYS_ADMIN (or privileged: true) and calls
# mount(2) itself. A non-root user could only mount through the setuid
# fusermount3, which needs CAP_SYS_ADMIN in the container's bounding set all
# the same and fails under no-new-privileges: nothing would be gained. What
# confines the daemon is the container: only SYS_ADMIN added, /dev/fuse the
# only device, and /run/secretfs/myapp the only host path it can write.

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches need BuildKit (the default builder since Docker 23). The binary
# is copied out of the target/ cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin secretfs \
 && install -D -m 0755 target/release/secretfs /out/secretfs

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# fuse3: fusermount3, to clear a mount point left dead by a killed predecessor
# (see deploy/kubernetes/). ca-certificates: the system CAs that verify Vault's
# TLS certificate (a private CA is passed with --ca-cert or VAULT_CACERT).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/secretfs /usr/local/bin/secretfs
LABEL org.opencontainers.image.title="secretfs" \
      org.opencontainers.image.description="Mount HashiCorp Vault / OpenBao KV secrets as files (FUSE)" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["secretfs", "mount"]

# The cmk-guard CLI for CI: `cmk-guard scan` from the binary scripts/package built.
#
#   scripts/package                       # dist/app/cmk-guard, checked by scripts/check-elf
#   docker build -t cmk-guard .
#   docker run --rm -e AZURE_TENANT_ID -e AZURE_CLIENT_ID -e AZURE_CLIENT_SECRET \
#     cmk-guard scan --subscription <id> --fail-on high
#
# No build stage: the image holds exactly the binary that was checked and packaged (its SHA-256
# is in dist/SHA256SUMS). Distroless Debian 12 with glibc, libgcc and the CA certificates, so
# both the static musl build and the glibc 2.28 build run; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --chmod=0755 dist/app/cmk-guard /usr/local/bin/cmk-guard

# distroless's "nonroot" user (65532), by number so that runtimes can verify it is not root.
USER 65532:65532

# The binary is the entrypoint (`docker run cmk-guard policy check …` works too); `scan` by default.
ENTRYPOINT ["/usr/local/bin/cmk-guard"]
CMD ["scan"]

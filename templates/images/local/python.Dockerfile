# Debian's Python 3.11 on the debootstrap base: the PYTHON_IMAGE of runtime.Dockerfile when
# nothing may be pulled (images.source: local). python3-venv builds the runtime's virtualenv.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

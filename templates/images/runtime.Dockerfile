# The OrbisVoice runtime image: one image for api, migrate, gateway and emulator (the compose
# file picks the command). Built by `orbisctl images build` from a context holding the host's
# wheelhouse: nothing is downloaded here, so it builds the same with no PyPI in reach.
#   wheels/deps/     dependency wheels + requirements.txt (change rarely: their own stage)
#   wheels/project/  the orbisvoice wheel itself (changes often: a small layer of its own)
# PYTHON_IMAGE: python:3.11-slim-bookworm (registry) or the local Debian Python base.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
COPY wheels/deps /wheels/deps
RUN python3 -m venv /opt/orbis \
 && /opt/orbis/bin/pip install --no-cache-dir --no-index --find-links /wheels/deps \
      -r /wheels/deps/requirements.txt \
 && /opt/orbis/bin/python -m compileall -q /opt/orbis/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 orbis \
 && useradd --system --uid 10001 --gid orbis --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin orbis
COPY --from=deps /opt/orbis /opt/orbis
COPY wheels/project /wheels/project
# Bytecode is compiled at build time; the root filesystem is read-only at run time.
RUN /opt/orbis/bin/pip install --no-cache-dir --no-index --no-deps /wheels/project/*.whl \
 && /opt/orbis/bin/python -m compileall -q /opt/orbis/lib
ENV PATH=/opt/orbis/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
CMD ["python", "-m", "runtime.api"]

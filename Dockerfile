# syntax=docker/dockerfile:1

# --- build: install the package and its dependencies into a self-contained venv ---
# Done in a separate stage so that whatever else is in the build context (.git, a local
# .venv, a data/ dir with a secret_key or SQLite file) never ends up in a layer of the
# final image. Only /opt/venv is copied across.
# Everything is installed from uv.lock (pinned, with hashes); uv itself from requirements-uv.txt.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

WORKDIR /src
COPY requirements-uv.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-uv.txt
# The dependencies first, in a layer of their own that a code change does not rebuild.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-cache --no-install-project --python /usr/local/bin/python3
COPY README.md ./
COPY service service
COPY workers workers
COPY webhooks webhooks
RUN uv sync --locked --no-cache --no-editable --python /usr/local/bin/python3


# --- runtime ---
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ADMINLINK_HOST=0.0.0.0 \
    ADMINLINK_DATA_DIR=/data

RUN groupadd --system --gid 10001 adminlink \
 && useradd --system --uid 10001 --gid adminlink --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin adminlink \
 && mkdir -p /data \
 && chown adminlink:adminlink /data \
 && chmod 0700 /data

COPY --from=build /opt/venv /opt/venv

USER adminlink:adminlink
WORKDIR /data

EXPOSE 8080

CMD ["adminlink", "web"]

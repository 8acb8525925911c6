# Image for the API (default command), the worker, the reference downstream service and the
# one-shot key generator; docker-compose.temporal.yml picks the process with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies get their own layer, keyed on pyproject.toml and constraints.txt only, so editing
# source does not reinstall them. `pip install .` cannot run yet: setuptools needs the packages.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# The directory client library (clients/python) too: the reference service finds tenants with it.
RUN pip install --no-deps -c constraints.txt . ./clients/python \
    && rm -rf build ./*.egg-info clients/python/build

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir /keys && chown app /keys
# A named volume mounted on /keys starts with this owner, so `python -m devstack.tokens init`
# can write the development keys there as `app` (docker-compose.temporal.yml).
USER app

EXPOSE 8000
CMD ["python", "-m", "api.serve", "--host", "0.0.0.0", "--port", "8000"]

# The llm-sandbox anchor's image: the sandbox image as it is, plus what llm-sandbox needs to
# set up its environment inside (a venv, as root, under /sandbox). Built by sandbox-bench.
FROM sandbox-platform/sandbox:latest
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /

# /opt/policyd/Makefile in the GPU image: `make engines` builds the engine caches of every model
# version in $(REPOSITORY) for the GPUs this container sees (docs/deployment.md). The repository
# must be mounted writable for it:
#   docker run --rm --gpus all -v "$PWD/models:/models" policyd:gpu make engines
REPOSITORY ?= /models

.PHONY: engines
engines:
	/opt/policyd/bin/policyctl engines build --repository $(REPOSITORY)

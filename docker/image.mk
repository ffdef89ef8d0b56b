# Container image targets, included by the top-level Makefile (`include docker/image.mk`).
#
#   make image          build the CPU image ($(IMAGE)) from docker/Dockerfile
#   make image-cuda     build the GPU image ($(IMAGE_CUDA)) from docker/Dockerfile.cuda
#   make test-image     smoke-test $(IMAGE): C-ECHO, replay a synthetic MR study, SEG + SR
#                       in the outbox volume, non-root, clean `podman stop` (docker/smoke_test.sh)
#   make base-image     debian:bookworm-slim from debootstrap (no registry needed)
#   make podman-config  podman storage + containers.conf under $(PODMAN_DIR)
#   make clean-podman   remove everything podman stored under $(PODMAN_DIR)
#
# Works on a machine without a Docker engine or registry access, as root, with podman from
# Debian (see docs/deployment.md "Building the images"). Hospitals with Docker simply run
# `docker build -f docker/Dockerfile -t dicomnode:0.1.0 .`; nothing here is needed there.

CONTAINER     ?= podman
PODMAN_DIR    ?= $(CURDIR)/.podman
IMAGE         ?= localhost/dicomnode:latest
IMAGE_CUDA    ?= localhost/dicomnode:cuda
DEBIAN_MIRROR ?= $(shell awk '/^URIs:/{print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
HOST_CA       ?= /etc/ssl/certs/ca-certificates.crt
# Local wheel indexes of this machine (torch 2.14.1 and its CUDA libraries, ~3 GB) are
# mounted read-only into the build at the same paths, so pip resolves them from disk
# instead of downloading them. Empty on machines without them: pip then uses PyPI only.
LOCAL_PIP_INDEXES ?= $(wildcard /opt/pypi/simple /opt/pypi-more/simple)

# Only for the container targets: exported globally they would point every other target's
# podman (e.g. podman-compose in `make test`) at config files that exist only after
# `make podman-config`.
_PODMAN_TARGETS := container-deps podman-config base-image image image-cuda test-image clean-podman
$(_PODMAN_TARGETS): export CONTAINERS_STORAGE_CONF := $(PODMAN_DIR)/storage.conf
$(_PODMAN_TARGETS): export CONTAINERS_CONF         := $(PODMAN_DIR)/containers.conf

_BUILD_ARGS := --format docker --network host --pull=never --secret id=hostca,src=$(HOST_CA)
ifneq ($(strip $(LOCAL_PIP_INDEXES)),)
_BUILD_ARGS += $(foreach d,$(LOCAL_PIP_INDEXES),-v $(patsubst %/simple,%,$(d)):$(patsubst %/simple,%,$(d)):ro)
_BUILD_ARGS += --build-arg PIP_EXTRA_INDEX_URL="$(foreach d,$(LOCAL_PIP_INDEXES),file://$(d))"
endif

.PHONY: container-deps podman-config base-image image image-cuda test-image clean-podman

container-deps:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
	  && command -v catatonit >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    podman runc debootstrap uidmap catatonit >/dev/null; }

# runc (crun rejects this host's hybrid cgroups), ulimits within root's hard limits.
podman-config:
	@mkdir -p $(PODMAN_DIR)
	@printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
	  $(PODMAN_DIR)/storage $(PODMAN_DIR)/run > $(PODMAN_DIR)/storage.conf
	@printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' \
	  $$(ulimit -Hn) $$(ulimit -Hn) > $(PODMAN_DIR)/containers.conf

# Tagged under both names so that `FROM debian:bookworm-slim` resolves locally.
base-image: container-deps podman-config
	@$(CONTAINER) image exists docker.io/library/debian:bookworm-slim || { \
	  set -e; R=$(PODMAN_DIR)/rootfs; rm -rf $$R; \
	  echo "debootstrap bookworm from $(DEBIAN_MIRROR) ..."; \
	  debootstrap --variant=minbase bookworm $$R $(DEBIAN_MIRROR) > $(PODMAN_DIR)/debootstrap.log; \
	  chroot $$R apt-get clean; rm -rf $$R/var/lib/apt/lists/* $$R/tmp/* $$R/var/tmp/*; : > $$R/etc/resolv.conf; \
	  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
	    $(DEBIAN_MIRROR) $(DEBIAN_MIRROR) $(DEBIAN_MIRROR) > $$R/etc/apt/sources.list; \
	  tar -C $$R -c . | $(CONTAINER) import -q - docker.io/library/debian:bookworm-slim >/dev/null; \
	  $(CONTAINER) tag docker.io/library/debian:bookworm-slim localhost/debian:bookworm-slim; \
	  rm -rf $$R; }

image: base-image
	$(CONTAINER) build $(_BUILD_ARGS) -f docker/Dockerfile -t $(IMAGE) .
	@$(CONTAINER) image inspect --format 'image $(IMAGE): {{.Size}} bytes' $(IMAGE)

image-cuda: base-image
	$(CONTAINER) build $(_BUILD_ARGS) -f docker/Dockerfile.cuda -t $(IMAGE_CUDA) .
	@$(CONTAINER) image inspect --format 'image $(IMAGE_CUDA): {{.Size}} bytes' $(IMAGE_CUDA)

# Needs the image (make image) and the host virtualenv with dicomnode (for echo/replay;
# built by the top-level Makefile's `venv` target when missing).
test-image: podman-config
	@[ -x .venv/bin/dicomnode ] || $(MAKE) venv
	CONTAINER=$(CONTAINER) IMAGE=$(IMAGE) bash docker/smoke_test.sh

clean-podman:
	-$(CONTAINER) rm -af -t 5 >/dev/null 2>&1
	-$(CONTAINER) system reset -f >/dev/null 2>&1
	-umount $(PODMAN_DIR)/storage/overlay 2>/dev/null
	rm -rf $(PODMAN_DIR)

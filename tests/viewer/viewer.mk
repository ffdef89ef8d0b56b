# Browser checks: OHIF 3.13.2 shows our MR SEG and SR (tests/viewer/test_ohif.py);
# dicom-microscopy-viewer (Slim's engine) shows our slide SEG and SR (test_microscopy.py).
# Included by the top-level Makefile (`-include tests/viewer/viewer.mk`); also works alone:
#
#   make -f tests/viewer/viewer.mk test-viewer
#
#   viewer-deps   Debian chromium (apt, if missing); @ohif/app@$(OHIF_VERSION) prebuilt dist
#                 (npm pack) in $(VIEWER_CACHE)/ohif/; playwright-core@$(PLAYWRIGHT_VERSION)
#                 in $(VIEWER_CACHE)/viewer-node/ (never a Playwright-downloaded browser);
#                 dicom-microscopy-viewer@$(DMV_VERSION) + dicomweb-client@$(DWC_VERSION) dists
#                 (npm pack) in $(VIEWER_CACHE)/dmv/
#   test-viewer   the tests inside `unshare -n` (Orthanc binds all interfaces); screenshots,
#                 summaries in $(VIEWER_OUT)/ohif/ and $(VIEWER_OUT)/microscopy/, timing.txt in $(VIEWER_OUT)
#
# VIEWER_VARIANT=sr-no-planar|seg-other-series|sr-planar-only uploads altered objects
# (see the test's docstring); VIEWER_TIMEOUT_S (default 240) is the per-step browser timeout.

SHELL              := /bin/bash
OHIF_VERSION       ?= 3.13.2
PLAYWRIGHT_VERSION ?= 1.65.1
DMV_VERSION        ?= 0.48.24
DWC_VERSION        ?= 0.11.3
VIEWER_CACHE       ?= $(CURDIR)/.cache
VIEWER_OUT         ?= $(CURDIR)/tests/viewer/out
VIEWER_PY          ?= $(if $(PY),$(PY),.venv/bin/python)
OHIF_DIST          := $(VIEWER_CACHE)/ohif/package/dist
PLAYWRIGHT_CORE    := $(VIEWER_CACHE)/viewer-node/node_modules/playwright-core
DMV_DIST           := $(VIEWER_CACHE)/dmv/dicom-microscopy-viewer-$(DMV_VERSION)/package/dist
DWC_JS             := $(VIEWER_CACHE)/dmv/dicomweb-client-$(DWC_VERSION)/package/build/dicomweb-client.js
# with the top-level Makefile: its `deps` (Orthanc, dcmtk, iproute2) and `venv` first
VIEWER_PREREQS     ?= $(if $(PY),deps venv,)

.PHONY: test-viewer viewer-deps

viewer-deps: $(OHIF_DIST)/index.html $(PLAYWRIGHT_CORE)/package.json $(DMV_DIST)/dicomMicroscopyViewer.bundle.min.js $(DWC_JS)
	@if ! command -v chromium >/dev/null; then \
	  echo "installing Debian chromium"; \
	  SUDO=$$( [ $$(id -u) = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null; fi
	@for b in Orthanc unshare ip node; do command -v $$b >/dev/null || { \
	  echo "test-viewer needs '$$b' (make deps: orthanc orthanc-dicomweb iproute2 util-linux; nodejs)"; exit 1; }; done
	@test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { echo "needs orthanc-dicomweb"; exit 1; }

$(OHIF_DIST)/index.html:
	mkdir -p $(VIEWER_CACHE)/ohif
	cd $(VIEWER_CACHE)/ohif && rm -rf package && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null \
	  && tar xzf ohif-app-$(OHIF_VERSION).tgz
	test -f $@ && touch $@

$(PLAYWRIGHT_CORE)/package.json:
	mkdir -p $(VIEWER_CACHE)/viewer-node
	cd $(VIEWER_CACHE)/viewer-node && { test -f package.json || echo '{"private": true}' > package.json; } \
	  && npm install --silent --no-audit --no-fund --save-exact playwright-core@$(PLAYWRIGHT_VERSION)
	test -f $@ && touch $@

$(VIEWER_CACHE)/dmv/%/package/.unpacked:
	mkdir -p $(VIEWER_CACHE)/dmv/$*
	cd $(VIEWER_CACHE)/dmv && npm pack --silent $$(echo $* | sed -E 's/-([0-9][^-]*)$$/@\1/') >/dev/null \
	  && tar xzf $*.tgz -C $* && touch $*/package/.unpacked

$(DMV_DIST)/dicomMicroscopyViewer.bundle.min.js: $(VIEWER_CACHE)/dmv/dicom-microscopy-viewer-$(DMV_VERSION)/package/.unpacked
	test -f $@ && touch $@

$(DWC_JS): $(VIEWER_CACHE)/dmv/dicomweb-client-$(DWC_VERSION)/package/.unpacked
	test -f $@ && touch $@

test-viewer: $(VIEWER_PREREQS) viewer-deps
	@mkdir -p $(VIEWER_OUT); start=$$(date +%s); \
	unshare -n bash -c 'ip link set lo up && DICOMNODE_VIEWER_TEST=1 VIEWER_CACHE=$(VIEWER_CACHE) \
	  VIEWER_OUT=$(VIEWER_OUT) $(VIEWER_PY) -m pytest -q -s -p no:cacheprovider -rA tests/viewer'; \
	rc=$$?; secs=$$(( $$(date +%s) - start )); \
	echo "test-viewer: rc=$$rc in $${secs} s (test only; deps excluded)" | tee -a $(VIEWER_OUT)/timing.txt; \
	exit $$rc

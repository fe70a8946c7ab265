# The two commands of README.md: `make demo` and `make test`. Both run `make setup` first,
# which installs everything on a fresh machine and is a no-op when nothing changed.
SHELL := /bin/bash
RUN := bash tools/run.sh

.PHONY: setup demo test yaml clean gpu-bench

setup:
	@bash tools/setup.sh

# `make demo DEMO_ARGS=--no-depth`: posed RGB alone (depth by stereo).
demo: setup
	$(RUN) python -m panoptic_mapping.tools.demo $(DEMO_ARGS)

test: setup
	$(RUN) python -m pytest

# On a machine with a CUDA device: issue 18's real-camera measurements (640x480) as one table.
gpu-bench: setup
	$(RUN) python -m panoptic_mapping.tools.gpu_benchmark $(GPU_BENCH_ARGS)

# Regenerate config/mapping.yaml and config/segmentation.yaml from the config dataclasses.
yaml: setup
	$(RUN) python -m panoptic_mapping.config --yaml --node mapping > config/mapping.yaml
	$(RUN) python -m panoptic_mapping.config --yaml --node segmentation > config/segmentation.yaml

clean:
	rm -rf .ros_ws out .pytest_cache

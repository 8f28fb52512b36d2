# kotel: the two commands of the README, and a few helpers.
.PHONY: test demo crds bench bench-scale e2e-up e2e-down

## Everything CI runs: fmt, clippy, unit/property tests, and the e2e suite on a local control plane.
test:
	e2e/test.sh

## The demo on a local control plane (no Docker needed). Ctrl-C stops everything.
demo:
	e2e/demo.sh

## Regenerate crds/ from the Rust types.
crds:
	cargo run -q -p kotel-operator -- crds > crds/kotel.dev.yaml
	cp crds/kotel.dev.yaml charts/kotel-operator/crds/kotel.dev.yaml

## Injection benchmark: 1,000 Deployments on the local control plane.
bench:
	e2e/bench.sh

## Scale benchmark: 5,000 workloads of every kind, 50 namespaces, 20 Instrumentations.
bench-scale:
	e2e/bench.sh scale

e2e-up:
	e2e/controlplane.sh up
e2e-down:
	e2e/controlplane.sh down

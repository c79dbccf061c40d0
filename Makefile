# Two commands set up everything on a fresh machine:
#   make demo   the local cluster (control plane and a real node), the chart, models rolled out
#   make test   every test
.PHONY: demo test lint crds fixtures controlplane node images bench-serving bench-models bench-operator bench-operator-scale bench-node clean

demo:
	bash tests/demo.sh

test:
	bash tests/run.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

crds:
	cargo run -q -p modelship-crds --bin crdgen

fixtures:
	bash serving/fixtures/generate.sh

controlplane:
	bash tests/controlplane/build.sh

node:
	bash tests/node/build.sh

images:
	bash tests/images.sh

bench-serving:
	bash bench/serving.sh

bench-models:
	bash bench/models.sh

bench-operator:
	bash bench/operator.sh

bench-operator-scale:
	bash bench/operator-scale.sh

bench-node:
	bash bench/node.sh

clean:
	cargo clean

module github.com/meshkit/meshkit/tests/interop/shop-go

go 1.26.0

require (
	github.com/meshkit/meshkit/gen/go v0.0.0
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The stubs are generated, never committed: build.sh runs buf generate with
// proto/buf.gen.go.yaml into ./gen and writes its go.mod.
replace github.com/meshkit/meshkit/gen/go => ./gen

package contract

import (
	_ "embed"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// speechDescriptors is the speech.v1 contract as `buf build` makes it:
// the file descriptors with their source info, the .proto's comments
// included, which the generated Go code drops. .ci/run fails when it is
// out of date with proto/.
//
//go:embed speech.binpb
var speechDescriptors []byte

// Descriptors returns the contract's documented descriptors, for
// reflection to serve: `grpcurl describe` then shows every field's units,
// limits and default.
func Descriptors() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(speechDescriptors, &set); err != nil {
		return nil, err
	}
	return protodesc.NewFiles(&set)
}

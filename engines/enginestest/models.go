package enginestest

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"
)

// ReshapeToOneRow is an ONNX model (opset 13) y = Reshape(x, [1, 8]) whose input x is [N, 8]:
// it declares a dynamic batch dimension, but its graph fixes the batch at 1, so the native
// library cannot run it at batch 2 and serves it at batch 1 only (with a warning). None of
// ../shared/models does this; exporters that bake the batch into a Reshape do.
func ReshapeToOneRow() []byte {
	msg := func(field protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), b)
	}
	str := func(field protowire.Number, s string) []byte { return msg(field, []byte(s)) }
	varint := func(field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, field, protowire.VarintType), v)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// ValueInfoProto{name, type: TypeProto{tensor_type{elem_type FLOAT, shape{dim...}}}}
	value := func(name string, dims ...[]byte) []byte {
		var shape []byte
		for _, d := range dims {
			shape = append(shape, msg(1, d)...)
		}
		return cat(str(1, name), msg(2, msg(1, cat(varint(1, 1), msg(2, shape)))))
	}
	dimParam := func(p string) []byte { return str(2, p) }
	dimValue := func(v uint64) []byte { return varint(1, v) }
	raw := make([]byte, 16)
	binary.LittleEndian.PutUint64(raw, 1)
	binary.LittleEndian.PutUint64(raw[8:], 8)
	shapeInit := cat(varint(1, 2), varint(2, 7 /* INT64 */), str(8, "shape"), msg(9, raw))
	node := cat(str(1, "x"), str(1, "shape"), str(2, "y"), str(3, "reshape"), str(4, "Reshape"))
	graph := cat(msg(1, node), str(2, "reshape_to_one_row"), msg(5, shapeInit),
		msg(11, value("x", dimParam("N"), dimValue(8))), msg(12, value("y", dimValue(1), dimValue(8))))
	return cat(varint(1, 8), str(2, "policyd test"), msg(7, graph), msg(8, cat(str(1, ""), varint(2, 13))))
}

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

// SequenceControls is an ONNX model (opset 13) of a Triton-style stateful policy that shows
// what its sequence control inputs and its state hold. Inputs, each [N, 1]: x FP32, START
// INT32, END FP32, READY BOOL, CORRID UINT64, h_in FP32 (a state). Outputs: h_out = h_in + x
// ([N, 1]) and y = [x, START, END, READY, CORRID, h_out] as FP32 ([N, 6]): a row of y holds
// the control values the server filled for that row and the running sum of its sequence.
func SequenceControls() []byte {
	// ValueInfoProto{name, type: TypeProto{tensor_type{elem_type, shape{N, cols}}}}
	value := func(name string, elem, cols uint64) []byte {
		shape := cat(msg(1, str(2, "N")), msg(1, varint(1, cols)))
		return cat(str(1, name), msg(2, msg(1, cat(varint(1, elem), msg(2, shape)))))
	}
	intAttr := func(name string, v uint64) []byte {
		return msg(5, cat(str(1, name), varint(3, v), varint(20, 2 /* INT */)))
	}
	node := func(op, name string, ins, outs []string, attrs ...[]byte) []byte {
		var b []byte
		for _, in := range ins {
			b = append(b, str(1, in)...)
		}
		for _, out := range outs {
			b = append(b, str(2, out)...)
		}
		return cat(b, str(3, name), str(4, op), cat(attrs...))
	}
	const (
		float  = 1
		int32T = 6
		boolT  = 9
		uint64 = 13
	)
	graph := cat(
		msg(1, node("Cast", "start_f", []string{"START"}, []string{"start_f"}, intAttr("to", float))),
		msg(1, node("Cast", "ready_f", []string{"READY"}, []string{"ready_f"}, intAttr("to", float))),
		msg(1, node("Cast", "corrid_f", []string{"CORRID"}, []string{"corrid_f"}, intAttr("to", float))),
		msg(1, node("Add", "acc", []string{"h_in", "x"}, []string{"h_out"})),
		msg(1, node("Concat", "show", []string{"x", "start_f", "END", "ready_f", "corrid_f", "h_out"}, []string{"y"}, intAttr("axis", 1))),
		str(2, "sequence_controls"),
		msg(11, value("x", float, 1)), msg(11, value("START", int32T, 1)), msg(11, value("END", float, 1)),
		msg(11, value("READY", boolT, 1)), msg(11, value("CORRID", uint64, 1)), msg(11, value("h_in", float, 1)),
		msg(12, value("y", float, 6)), msg(12, value("h_out", float, 1)),
	)
	return cat(varint(1, 8), str(2, "policyd test"), msg(7, graph), msg(8, cat(str(1, ""), varint(2, 13))))
}

// Protobuf wire writers of the test models: a length-delimited field, a string field, a
// varint field, and concatenation.
func msg(field protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), b)
}

func str(field protowire.Number, s string) []byte { return msg(field, []byte(s)) }

func varint(field protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, field, protowire.VarintType), v)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Package artifactstest makes test models: ONNX models whose weights live in an external-data
// file, as PyTorch's exporter writes them (model.onnx + model.onnx.data).
package artifactstest

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// Externalize moves the raw_data of every initializer of the graph of an ONNX model into one
// external-data file named location, each at the next offset that is a multiple of align
// (zero-padded; align <= 1: packed), with the ONNX spec's location, offset and length keys and
// data_location EXTERNAL. It returns the rewritten model and the file's bytes; an error when no
// initializer had raw_data. Other fields are copied as they are.
func Externalize(model []byte, location string, align int64) (out, data []byte, err error) {
	moved := 0
	tensor := func(b []byte) ([]byte, error) {
		var t, raw []byte
		haveRaw := false
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			if num == 9 && typ == protowire.BytesType { // raw_data
				raw, _ = protowire.ConsumeBytes(b[n:])
				haveRaw = true
			} else {
				t = append(t, b[:n+m]...)
			}
			b = b[n+m:]
		}
		if !haveRaw {
			return t, nil
		}
		off := int64(len(data))
		if align > 1 && off%align != 0 {
			off += align - off%align
		}
		data = append(data, make([]byte, off-int64(len(data)))...)
		data = append(data, raw...)
		for _, kv := range [][2]string{{"location", location}, {"offset", strconv.FormatInt(off, 10)}, {"length", strconv.Itoa(len(raw))}} {
			var e []byte
			e = protowire.AppendTag(e, 1, protowire.BytesType)
			e = protowire.AppendString(e, kv[0])
			e = protowire.AppendTag(e, 2, protowire.BytesType)
			e = protowire.AppendString(e, kv[1])
			t = protowire.AppendTag(t, 13, protowire.BytesType) // external_data
			t = protowire.AppendBytes(t, e)
		}
		t = protowire.AppendTag(t, 14, protowire.VarintType) // data_location
		t = protowire.AppendVarint(t, 1)                     // EXTERNAL
		moved++
		return t, nil
	}
	// rewrite copies message b, replacing the bytes fields numbered num by f of them.
	rewrite := func(b []byte, num protowire.Number, f func([]byte) ([]byte, error)) ([]byte, error) {
		var o []byte
		for len(b) > 0 {
			n0, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			m := protowire.ConsumeFieldValue(n0, typ, b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			if n0 == num && typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(b[n:])
				nv, err := f(v)
				if err != nil {
					return nil, err
				}
				o = protowire.AppendTag(o, num, protowire.BytesType)
				o = protowire.AppendBytes(o, nv)
			} else {
				o = append(o, b[:n+m]...)
			}
			b = b[n+m:]
		}
		return o, nil
	}
	out, err = rewrite(model, 7, func(g []byte) ([]byte, error) { return rewrite(g, 5, tensor) })
	if err != nil {
		return nil, nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	if moved == 0 {
		return nil, nil, errors.New("no initializer has raw_data to move")
	}
	return out, data, nil
}

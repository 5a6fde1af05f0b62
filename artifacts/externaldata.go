package artifacts

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of onnx.proto that lead to tensors (ModelProto.graph, GraphProto.node and
// .initializer, NodeProto.attribute, AttributeProto.t/.g/.tensors/.graphs, TensorProto
// .external_data and its StringStringEntryProto key/value).
const (
	fModelGraph        = 7
	fModelFunctions    = 25
	fFunctionNode      = 7
	fGraphNode         = 1
	fGraphInitializer  = 5
	fNodeAttribute     = 5
	fAttrTensor        = 5
	fAttrGraph         = 6
	fAttrTensors       = 10
	fAttrGraphs        = 11
	fTensorName        = 8
	fTensorExternal    = 13
	fTensorLocation    = 14
	fEntryKey          = 1
	fEntryValue        = 2
	tensorLocationExt  = 1 // TensorProto.DataLocation EXTERNAL
	maxProtoGraphDepth = 64
)

// errNotONNX says bytes do not parse as a protobuf message.
var errNotONNX = errors.New("not an ONNX model")

// ExternalDataFiles returns the files an ONNX model's tensors keep their data in (ONNX
// "external data": the "location" key of every tensor whose data_location is EXTERNAL, in
// initializers, tensor attributes and subgraphs), as clean slash-separated paths relative to
// the model, sorted, each once. A location that is empty, absolute, has a backslash or "..",
// or a tensor marked EXTERNAL without a location, is an error naming the tensor. Only the
// fields leading to tensors are read: it is not a validation of the model (the engine does it).
func ExternalDataFiles(model []byte) ([]string, error) {
	w := &onnxWalk{files: map[string]bool{}}
	if err := w.message(model, w.model, 0); err != nil {
		return nil, fmt.Errorf("external data: %w", err)
	}
	out := make([]string, 0, len(w.files))
	for f := range w.files {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

// ExternalDataLocation returns the clean form of an external-data location ("./a/b.bin" ->
// "a/b.bin") or an error saying why it cannot be one: empty, absolute, a backslash, "..".
func ExternalDataLocation(loc string) (string, error) {
	switch {
	case loc == "":
		return "", errors.New("location is empty")
	case strings.ContainsRune(loc, 0):
		return "", fmt.Errorf("location %q contains NUL", loc)
	case strings.Contains(loc, `\`):
		return "", fmt.Errorf("location %q contains a backslash; locations are relative to the model, with '/'", loc)
	case strings.HasPrefix(loc, "/") || len(loc) >= 2 && loc[1] == ':':
		return "", fmt.Errorf("location %q is an absolute path; locations are relative to the model", loc)
	}
	for _, part := range strings.Split(loc, "/") {
		if part == ".." {
			return "", fmt.Errorf("location %q contains '..'; external data must stay beside the model", loc)
		}
	}
	c := path.Clean(loc)
	if c == "." {
		return "", fmt.Errorf("location %q names no file", loc)
	}
	return c, nil
}

type onnxWalk struct {
	files map[string]bool
}

// message calls field for each field of the protobuf message b.
func (w *onnxWalk) message(b []byte, field func(num protowire.Number, typ protowire.Type, v []byte, depth int) error, depth int) error {
	if depth > maxProtoGraphDepth {
		return errors.New("the model nests graphs too deeply")
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			continue
		}
		if err := field(num, typ, v, depth); err != nil {
			return err
		}
	}
	return nil
}

func (w *onnxWalk) model(num protowire.Number, _ protowire.Type, v []byte, depth int) error {
	switch num {
	case fModelGraph:
		return w.message(v, w.graph, depth+1)
	case fModelFunctions:
		return w.message(v, func(num protowire.Number, t protowire.Type, v []byte, depth int) error {
			if num == fFunctionNode {
				return w.message(v, w.node, depth+1)
			}
			return nil
		}, depth+1)
	}
	return nil
}

func (w *onnxWalk) graph(num protowire.Number, _ protowire.Type, v []byte, depth int) error {
	switch num {
	case fGraphNode:
		return w.message(v, w.node, depth+1)
	case fGraphInitializer:
		return w.tensor(v)
	}
	return nil
}

func (w *onnxWalk) node(num protowire.Number, _ protowire.Type, v []byte, depth int) error {
	if num != fNodeAttribute {
		return nil
	}
	return w.message(v, func(num protowire.Number, _ protowire.Type, v []byte, depth int) error {
		switch num {
		case fAttrTensor, fAttrTensors:
			return w.tensor(v)
		case fAttrGraph, fAttrGraphs:
			return w.message(v, w.graph, depth+1)
		}
		return nil
	}, depth+1)
}

// tensor records the location of an EXTERNAL TensorProto.
func (w *onnxWalk) tensor(b []byte) error {
	var name, location string
	haveLocation, external := false, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fTensorLocation && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(m))
			}
			external = v == tensorLocationExt
			n = m
		case typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(m))
			}
			n = m
			switch num {
			case fTensorName:
				name = string(v)
			case fTensorExternal:
				k, val, err := entry(v)
				if err != nil {
					return err
				}
				if k == "location" {
					location, haveLocation = val, true
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	if !external {
		return nil
	}
	if !haveLocation {
		return fmt.Errorf("tensor %q is EXTERNAL but names no location", name)
	}
	c, err := ExternalDataLocation(location)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", name, err)
	}
	w.files[c] = true
	return nil
}

// entry decodes a StringStringEntryProto.
func entry(b []byte) (key, value string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == fEntryKey || num == fEntryValue) {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", "", fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(m))
			}
			if num == fEntryKey {
				key = string(v)
			} else {
				value = string(v)
			}
			n = m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", "", fmt.Errorf("%w: %w", errNotONNX, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return key, value, nil
}

// ExternalData reads the external-data files the model bytes (the artifact's model.onnx, as
// ReadFile returned it) name, each checked against the manifest as ReadFile checks it, keyed
// by the clean location (ExternalDataFiles); nil when the model names none. A file the model
// names that the manifest does not list is an ErrIntegrity VerifyError naming it.
func (a *Artifact) ExternalData(model []byte) (map[string][]byte, error) {
	names, err := ExternalDataFiles(model)
	if errors.Is(err, errNotONNX) {
		return nil, nil // the engine says what is wrong with it
	}
	if err != nil {
		return nil, &VerifyError{a.Manifest.Name, a.Manifest.Version, ModelFile, err.Error(), ErrIntegrity}
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := a.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
}

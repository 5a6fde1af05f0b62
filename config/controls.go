package config

import (
	"fmt"
	"math"
	"slices"
)

// controlDTypes are the datatypes a control of each kind may have (Triton's: the
// *_false_true fields of START, END and READY; CORRID's data_type, strings aside).
var controlDTypes = map[string][]string{
	"start":  {"FP32", "INT32", "BOOL"},
	"end":    {"FP32", "INT32", "BOOL"},
	"ready":  {"FP32", "INT32", "BOOL"},
	"corrid": {"INT32", "INT64", "UINT32", "UINT64"},
}

// validateControls checks the rules of models[].sequence.controls (path) the tags do not say:
// input, kind and datatype set, the datatype fits the kind, distinct false and true values
// that the datatype holds, each input and each kind once, no input both a control and a state.
func validateControls(ch *checker, path string, sq ModelSequence) {
	pairs, _ := sq.StatePairs()
	for i, c := range sq.Controls {
		p := fmt.Sprintf("%s[%d]", path, i)
		if c.Input == "" {
			ch.fail(p+".input", "is required: the model input the server fills")
		}
		dts, known := controlDTypes[c.Kind]
		switch {
		case c.Kind == "":
			ch.fail(p+".kind", "is required: start, end, ready or corrid")
		case !known: // the enum check reports it
		case c.DataType == "":
			ch.fail(p+".datatype", "is required: one of %v for a %s control", dts, c.Kind)
		case !slices.Contains(dts, c.DataType):
			ch.fail(p+".datatype", "a %s control is one of %v, got %s", c.Kind, dts, c.DataType)
		}
		if known && c.Kind != "corrid" {
			switch {
			case c.FalseValue == c.TrueValue:
				ch.fail(p+".true_value", "equals false_value (%v): the model could not tell true from false", c.FalseValue)
			case c.DataType == "BOOL" && (!zeroOne(c.FalseValue) || !zeroOne(c.TrueValue)):
				ch.fail(p, "a BOOL control's false_value and true_value are 0 or 1, got %v and %v", c.FalseValue, c.TrueValue)
			case c.DataType == "INT32" && (!int32Value(c.FalseValue) || !int32Value(c.TrueValue)):
				ch.fail(p, "an INT32 control's false_value and true_value are 32-bit integers, got %v and %v", c.FalseValue, c.TrueValue)
			}
		}
		for j := range i {
			o := sq.Controls[j]
			if c.Input != "" && o.Input == c.Input {
				ch.fail(p+".input", "%q is also controls[%d]; list each input once", c.Input, j)
			}
			if known && o.Kind == c.Kind {
				ch.fail(p+".kind", "%s is also controls[%d]; a model has at most one control of each kind", c.Kind, j)
			}
		}
		for _, st := range pairs {
			if c.Input != "" && st[0] == c.Input {
				ch.fail(p+".input", "%q is also a state input (sequence.states)", c.Input)
			}
		}
	}
}

func zeroOne(f float64) bool { return f == 0 || f == 1 }
func int32Value(f float64) bool {
	return f == math.Trunc(f) && f >= math.MinInt32 && f <= math.MaxInt32
}

package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScanJSONAccepts(t *testing.T) {
	for _, doc := range []string{
		`{}`, `[]`, ` [ ] `, `0`, `-0.5e+3`, `"x"`, `true`, `false`, `null`,
		`{"a":[1,[2,[3]],{"b":null}],"c":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}`,
		"\t\r\n{\"é\":\"日本\"}\n",
		// Number tokens as fastjson delimits them: refused where they are used.
		`[NaN,-Inf,inf,+1,01,1.,1e]`,
		`[` + strings.Repeat(`[`, maxJSONDepth-1) + strings.Repeat(`]`, maxJSONDepth-1) + `]`,
	} {
		v, err := scanJSON([]byte(doc), nil, nil)
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if want := strings.TrimSpace(doc); string(v) != want {
			t.Errorf("%q: value %q, want %q", doc, v, want)
		}
	}
}

func TestScanJSONRefuses(t *testing.T) {
	for doc, want := range map[string]string{
		``:                                  "expected a value, found the end of the body at byte 0",
		`   `:                               "expected a value, found the end of the body at byte 3",
		`[1,]`:                              "unexpected ']', expected a value at byte 3",
		`[1 2]`:                             "expected ',' or ']' after an array element, found '2' at byte 3",
		`{"a":1,}`:                          "expected a string key, found '}' at byte 7",
		`{"a" 1}`:                           "expected ':' after an object key, found '1' at byte 5",
		`{"a":1 "b":2}`:                     "expected ',' or '}' after an object member, found '\"' at byte 7",
		`{'a':1}`:                           "expected a string key, found '\\'' at byte 1",
		`[Infinity]`:                        "expected ',' or ']' after an array element, found 'i' at byte 4",
		`[-]`:                               "unexpected ']', expected a value at byte 2",
		`[nul]`:                             "expected null at byte 1",
		`[x]`:                               "unexpected 'x', expected a value at byte 1",
		`"\u00g0"`:                          `invalid \u escape in a string at byte 1`,
		`"\a"`:                              "invalid escape in a string at byte 1",
		"\"a\tb\"":                          "control character byte 0x9 in a string at byte 2",
		"\"\xc3\"":                          "invalid UTF-8 in a string at byte 1",
		"\"\xed\xa0\x80\"":                  "invalid UTF-8 in a string at byte 1", // a surrogate in UTF-8
		`"abc`:                              "unterminated string at byte 0",
		`"abc\`:                             "unterminated string at byte 0",
		`{} {}`:                             "unexpected '{' after the top-level value at byte 3",
		"[1]\x00":                           "unexpected byte 0x0 after the top-level value at byte 3",
		strings.Repeat(`[`, maxJSONDepth+1): "arrays and objects nested deeper than 64 levels at byte 64",
	} {
		_, err := scanJSON([]byte(doc), nil, nil)
		if err == nil {
			t.Errorf("%q accepted", doc)
			continue
		}
		if _, ok := err.(*requestError); !ok || err.Error() != "invalid JSON: "+want {
			t.Errorf("%q: %T %q\nwant %q", doc, err, err, "invalid JSON: "+want)
		}
	}
}

// The members scanJSON keeps are the top-level ones, the last of a repeated key.
func TestScanJSONKeys(t *testing.T) {
	keys := []string{"a", "b", "c"}
	vals := make([]jsonValue, 3)
	vals[2] = jsonValue("stale")
	if _, err := scanJSON([]byte(`{"a":1,"x":{"b":2},"\u0061":[3], "b" : "4" }`), keys, vals); err != nil {
		t.Fatal(err)
	}
	if string(vals[0]) != "[3]" || string(vals[1]) != `"4"` || vals[2] != nil {
		t.Errorf("values %q", vals)
	}
}

func TestUnquote(t *testing.T) {
	for raw, want := range map[string]string{
		`plain`:                    "plain",
		`a\"b\\c\/d\b\f\n\r\t`:     "a\"b\\c/d\b\f\n\r\t",
		`\u00e9\u65E5\ud83d\ude00`: "é日😀",
		`\ud83d`:                   "\ufffd",  // a lone high surrogate
		`\ude00x`:                  "\ufffdx", // a lone low surrogate
		`\ud83d\u0041`:             "\ufffdA", // a high surrogate, then no low one
		`\ud83d\ud83d\ude00`:       "\ufffd😀", // the second one pairs
	} {
		if got := string(appendUnquoted(nil, []byte(raw))); got != want {
			t.Errorf("%s: %q, want %q", raw, got, want)
		}
		var std string
		if err := json.Unmarshal([]byte(`"`+raw+`"`), &std); err != nil || std != want {
			t.Errorf("%s: encoding/json reads %q (%v), want %q", raw, std, err, want)
		}
	}
	v := jsonValue(`"\u0069d"`)
	if !v.is("id") || v.is("i") || v.is("idx") {
		t.Error("is with an escape")
	}
	if s, ok := unquoteMax(nil, jsonValue(`"`+strings.Repeat(`\u00e9`, 128)+`"`), 256); !ok || len(s) != 256 {
		t.Errorf("unquoteMax of 256 bytes: %d %v", len(s), ok)
	}
	if _, ok := unquoteMax(nil, jsonValue(`"`+strings.Repeat(`\u00e9`, 128)+`x"`), 256); ok {
		t.Error("unquoteMax of 257 bytes fits")
	}
}

// FuzzScanJSON checks the scanner against encoding/json: what encoding/json accepts, it
// accepts; what it accepts beyond is a fastjson number token only; the walkers see the values
// encoding/json sees. Errors are short, whatever the input.
func FuzzScanJSON(f *testing.F) {
	for _, c := range loadInvalidCases(f) {
		f.Add(c.body())
	}
	for _, s := range []string{`{"a":[1,2,{"b":"\u00e9"}],"c":null}`, `[NaN]`, `"\ud800"`, `[[[]]]`, `{"a":1,"a":2}`, "[1e5,-0.0,\"\\u0000\"]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:len(b):len(b)]
		v, err := scanJSON(b, nil, nil)
		std := json.Valid(b) && utf8.Valid(b) // encoding/json lets invalid UTF-8 through
		if err != nil {
			if std && !tooDeep(b) {
				t.Fatalf("%q: refused (%v), encoding/json accepts it", b, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "invalid JSON: ") || len(msg) > 120 {
				t.Fatalf("error %q", msg)
			}
			return
		}
		if !std {
			if !hasLaxNumber(v) {
				t.Fatalf("%q: accepted, encoding/json refuses it", b)
			}
			return
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var x any
		if err := d.Decode(&x); err != nil {
			t.Fatal(err)
		}
		sameJSON(t, v, x)
	})
}

// tooDeep reports whether b nests deeper than the scanner allows (encoding/json allows 10000).
func tooDeep(b []byte) bool {
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == '[' || c == '{'):
			if depth++; depth > maxJSONDepth {
				return true
			}
		case !inString && (c == ']' || c == '}'):
			depth--
		}
	}
	return false
}

func hasLaxNumber(v jsonValue) bool {
	switch v.kind() {
	case jsonNumber:
		return !isJSONNumber(v)
	case jsonArray, jsonObject:
		for it := v.iter(); ; {
			var e jsonValue
			var ok bool
			if v.kind() == jsonObject {
				_, e, ok = it.member()
			} else {
				e, ok = it.next()
			}
			if !ok {
				return false
			}
			if hasLaxNumber(e) {
				return true
			}
		}
	}
	return false
}

// sameJSON checks that the walkers read v as encoding/json read x.
func sameJSON(t *testing.T, v jsonValue, x any) {
	t.Helper()
	switch x := x.(type) {
	case map[string]any:
		seen := map[string]bool{}
		for it := v.iter(); ; {
			k, e, ok := it.member()
			if !ok {
				break
			}
			key := string(appendUnquoted(nil, k.raw()))
			if _, ok := x[key]; !ok {
				t.Fatalf("key %q of %s not in %v", key, v, x)
			}
			if !seen[key] && v.get(key) == nil {
				t.Fatalf("get(%q) of %s = nil", key, v)
			}
			seen[key] = true
			if v.len() == len(x) { // no repeated key: each value is the one encoding/json kept
				sameJSON(t, e, x[key])
			}
		}
		if len(seen) != len(x) {
			t.Fatalf("%s: %d keys, encoding/json %d", v, len(seen), len(x))
		}
	case []any:
		if v.kind() != jsonArray || v.len() != len(x) {
			t.Fatalf("%s: want an array of %d", v, len(x))
		}
		it := v.iter()
		for _, xe := range x {
			e, _ := it.next()
			sameJSON(t, e, xe)
		}
	case string:
		if v.kind() != jsonString || string(appendUnquoted(nil, v.raw())) != x {
			t.Fatalf("%s: want the string %q", v, x)
		}
	case json.Number:
		if v.kind() != jsonNumber || string(v) != string(x) {
			t.Fatalf("%s: want the number %s", v, x)
		}
	case bool:
		if want := map[bool]jsonKind{true: jsonTrue, false: jsonFalse}[x]; v.kind() != want {
			t.Fatalf("%s: want %v", v, x)
		}
	case nil:
		if v.kind() != jsonNull {
			t.Fatalf("%s: want null", v)
		}
	default:
		t.Fatalf("%T", x)
	}
}

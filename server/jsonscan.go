package server

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The request decoders read JSON without building a tree of it: scanJSON checks the whole text
// once (RFC 8259, allocating nothing) and returns the top-level value as a view of the body;
// the decoders then walk the views (jsonValue.iter, get) and convert the values they need
// straight into the typed input buffers. Memory per request is thus the body (which fasthttp
// holds anyway) plus the input tensors, whatever the body holds.
//
// One leniency is kept on purpose: number tokens are delimited as fastjson delimits them (a run
// of 0-9 . e E + -, or inf/nan with an optional sign), so that a bad number in a tensor is
// refused naming its input and element ("invalid JSON number \"NaN\""), not as a syntax error.
// isJSONNumber checks a token against RFC 8259 where it is used.

// maxJSONDepth bounds the nesting of arrays and objects (a tensor needs bridge.MaxRank).
const maxJSONDepth = 64

// jsonKind is the type of a JSON value; String names it as fastjson names its types.
type jsonKind uint8

const (
	jsonNone jsonKind = iota // no value: a key that is not there
	jsonObject
	jsonArray
	jsonString
	jsonNumber
	jsonTrue
	jsonFalse
	jsonNull
)

var jsonKindNames = [...]string{"nothing", "object", "array", "string", "number", "true", "false", "null"}

func (k jsonKind) String() string { return jsonKindNames[k] }

// jsonValue is one value of a JSON text that scanJSON accepted: a view of its bytes, without the
// whitespace around it; nil when there is no value. Its methods trust the text to be valid.
type jsonValue []byte

func (v jsonValue) kind() jsonKind {
	if len(v) == 0 {
		return jsonNone
	}
	switch v[0] {
	case '{':
		return jsonObject
	case '[':
		return jsonArray
	case '"':
		return jsonString
	case 't':
		return jsonTrue
	case 'f':
		return jsonFalse
	case 'n':
		if len(v) == 4 && v[1] == 'u' {
			return jsonNull
		}
	}
	return jsonNumber // nan and inf included (see above)
}

// scanJSON checks that b is one JSON value (surrounded by whitespace only) and returns it. An
// error is a *requestError that says what is wrong and at which byte, in a few words however
// long the body. When the value is an object, the value of its member called keys[j] is stored
// in vals[j] (nil when there is none; the last one when the key is repeated, as
// encoding/json and JSON.parse take it), so that the caller need not walk it again.
func scanJSON(b []byte, keys []string, vals []jsonValue) (jsonValue, error) {
	s := jsonScanner{b: b}
	clear(vals)
	s.ws()
	start := s.i
	var err error
	if s.i < len(b) && b[s.i] == '{' {
		err = s.object(1, keys, vals)
	} else {
		err = s.value(0)
	}
	if err != nil {
		return nil, err
	}
	end := s.i
	s.ws()
	if s.i < len(b) {
		return nil, s.fail("unexpected " + s.found() + " after the top-level value")
	}
	return jsonValue(b[start:end:end]), nil
}

// jsonScanner checks a JSON text; i is the offset of the next byte to read.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) fail(what string) error {
	return badRequest("invalid JSON: %s at byte %d", what, s.i)
}

// found describes the byte at s.i for a message: 'x', byte 0x07, or the end of the body.
func (s *jsonScanner) found() string {
	if s.i >= len(s.b) {
		return "end of the body"
	}
	c := s.b[s.i]
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return "byte 0x" + strconv.FormatUint(uint64(c), 16)
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads one value whose first byte is at s.i; depth is the number of arrays and objects
// around it.
func (s *jsonScanner) value(depth int) error {
	if s.i >= len(s.b) {
		return s.fail("expected a value, found the end of the body")
	}
	switch s.b[s.i] {
	case '{':
		return s.object(depth+1, nil, nil)
	case '[':
		return s.array(depth + 1)
	case '"':
		return s.str()
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		if s.i+1 < len(s.b) && s.b[s.i+1] == 'u' {
			return s.literal("null")
		}
	}
	return s.number()
}

func (s *jsonScanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("expected " + lit)
	}
	s.i += len(lit)
	return nil
}

// number reads a number token as fastjson delimits one (see the file comment).
func (s *jsonScanner) number() error {
	j := s.i
	for j < len(s.b) && isNumberByte(s.b[j]) {
		j++
	}
	if n := j - s.i; n == 0 || n == 1 && (s.b[s.i] == '-' || s.b[s.i] == '+') {
		if len(s.b)-j < 3 || !equalFold3(s.b[j:j+3], "inf") && !equalFold3(s.b[j:j+3], "nan") {
			if n == 1 {
				s.i = j
			}
			return s.fail("unexpected " + s.found() + ", expected a value")
		}
		j += 3
	}
	s.i = j
	return nil
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E'
}

// equalFold3 compares three bytes with a lower-case ASCII word, ignoring case.
func equalFold3(b []byte, word string) bool {
	return b[0]|0x20 == word[0] && b[1]|0x20 == word[1] && b[2]|0x20 == word[2]
}

// str reads a string: escapes as RFC 8259 lists them, no control characters, valid UTF-8.
func (s *jsonScanner) str() error {
	start := s.i
	i := s.i + 1
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return nil
		case c == '\\':
			if i+1 >= len(s.b) {
				i = len(s.b)
				continue
			}
			switch s.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(s.b)-i < 6 || !isHex4(s.b[i+2:i+6]) {
					s.i = i
					return s.fail(`invalid \u escape in a string`)
				}
				i += 6
			default:
				s.i = i
				return s.fail("invalid escape in a string")
			}
		case c < 0x20:
			s.i = i
			return s.fail("control character " + s.found() + " in a string")
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(s.b[i:])
			if r == utf8.RuneError && size == 1 {
				s.i = i
				return s.fail("invalid UTF-8 in a string")
			}
			i += size
		}
	}
	s.i = start
	return s.fail("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f') {
			return false
		}
	}
	return true
}

func (s *jsonScanner) array(depth int) error {
	if depth > maxJSONDepth {
		return s.fail("arrays and objects nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels")
	}
	s.i++ // [
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.i < len(s.b) {
			switch s.b[s.i] {
			case ',':
				s.i++
				continue
			case ']':
				s.i++
				return nil
			}
		}
		return s.fail("expected ',' or ']' after an array element, found " + s.found())
	}
}

// object reads an object and stores the values of its members called keys[j] in vals[j].
func (s *jsonScanner) object(depth int, keys []string, vals []jsonValue) error {
	if depth > maxJSONDepth {
		return s.fail("arrays and objects nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels")
	}
	s.i++ // {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("expected a string key, found " + s.found())
		}
		key := s.i
		if err := s.str(); err != nil {
			return err
		}
		keyEnd := s.i
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected ':' after an object key, found " + s.found())
		}
		s.i++
		s.ws()
		start := s.i
		if err := s.value(depth); err != nil {
			return err
		}
		for j, k := range keys {
			if jsonValue(s.b[key:keyEnd]).is(k) {
				vals[j] = jsonValue(s.b[start:s.i:s.i])
			}
		}
		s.ws()
		if s.i < len(s.b) {
			switch s.b[s.i] {
			case ',':
				s.i++
				continue
			case '}':
				s.i++
				return nil
			}
		}
		return s.fail("expected ',' or '}' after an object member, found " + s.found())
	}
}

// The walkers below read text scanJSON accepted.

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the offset just after the value that starts at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '[', '{':
		depth := 0
		for i < len(b) {
			for i < len(b) && jsonBytes[b[i]]&structural == 0 {
				i++
			}
			if i == len(b) {
				break
			}
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '[', '{':
				depth++
			case ']', '}':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && jsonBytes[b[i]]&delimiter == 0 { // a number or a literal
		i++
	}
	return i
}

// jsonBytes classes the bytes for the walkers.
var jsonBytes = func() (t [256]uint8) {
	for _, c := range `"[]{}` {
		t[c] |= structural
	}
	for _, c := range ",]} \t\n\r" {
		t[c] |= delimiter
	}
	return t
}()

const (
	structural = 1 << iota // starts or ends a string, an array or an object
	delimiter              // ends a number or a literal
)

// skipString returns the offset just after the string that starts at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// jsonIter walks the elements of an array or the members of an object.
type jsonIter struct {
	v jsonValue
	i int
}

func (v jsonValue) iter() jsonIter { return jsonIter{v: v, i: 1} }

// next returns the next element of an array (or key of an object); ok is false after the last.
func (it *jsonIter) next() (e jsonValue, ok bool) {
	i := skipWS(it.v, it.i)
	if i < len(it.v) && it.v[i] == ',' {
		i = skipWS(it.v, i+1)
	}
	if i >= len(it.v) || it.v[i] == ']' || it.v[i] == '}' {
		it.i = i
		return nil, false
	}
	end := skipValue(it.v, i)
	it.i = end
	return it.v[i:end:end], true
}

// member returns the next key (a string value, quotes included) and value of an object.
func (it *jsonIter) member() (key, val jsonValue, ok bool) {
	if key, ok = it.next(); !ok {
		return nil, nil, false
	}
	i := skipWS(it.v, skipWS(it.v, it.i)+1) // past the ':'
	end := skipValue(it.v, i)
	it.i = end
	return key, it.v[i:end:end], true
}

// memberData is member for the "data" of a tensor: it also counts the values in an array
// value that are not arrays, at any depth (leaves; -1 when the value is not an array).
func (it *jsonIter) memberData(dataKey string) (key, val jsonValue, leaves int64, ok bool) {
	if key, ok = it.next(); !ok {
		return nil, nil, 0, false
	}
	i := skipWS(it.v, skipWS(it.v, it.i)+1) // past the ':'
	end, leaves := 0, int64(-1)
	if it.v[i] == '[' && key.is(dataKey) {
		end, leaves = skipCountingLeaves(it.v, i)
	} else {
		end = skipValue(it.v, i)
	}
	it.i = end
	return key, it.v[i:end:end], leaves, true
}

// skipCountingLeaves is skipValue for the array that starts at b[i], counting its leaves.
func skipCountingLeaves(b []byte, i int) (end int, leaves int64) {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r', ',':
			i++
		case '[':
			depth++
			i++
		case ']':
			depth--
			i++
			if depth == 0 {
				return i, leaves
			}
		default:
			leaves++
			i = skipValue(b, i)
		}
	}
	return i, leaves
}

// len counts the elements of an array (members of an object).
func (v jsonValue) len() int {
	n := 0
	for it := v.iter(); ; n++ {
		if _, ok := it.next(); !ok {
			return n
		}
	}
}

// get returns the value of the first member of an object called name (nil when none), as
// fastjson's Get does.
func (v jsonValue) get(name string) jsonValue {
	for it := v.iter(); ; {
		k, val, ok := it.member()
		if !ok {
			return nil
		}
		if k.is(name) {
			return val
		}
	}
}

// raw is the text of a string value between its quotes, escapes not resolved.
func (v jsonValue) raw() []byte { return v[1 : len(v)-1] }

// is reports whether the string value v is s once unescaped.
func (v jsonValue) is(s string) bool {
	raw := v.raw()
	if !hasEscape(raw) {
		return string(raw) == s
	}
	if len(raw) > 6*len(s) { // an escape is at most 6 bytes for one byte at least
		return false
	}
	var buf [64]byte
	return string(appendUnquoted(buf[:0], raw)) == s
}

func hasEscape(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' {
			return true
		}
	}
	return false
}

// appendUnquoted appends the text of a string between its quotes, escapes resolved (a lone
// surrogate becomes U+FFFD), to dst.
func appendUnquoted(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(raw) {
			break
		}
		e := raw[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+4 > len(raw) {
				return dst
			}
			r := rune(hex4(raw[i:]))
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = rune(hex4(raw[i+2:]))
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // " \ /
			dst = append(dst, e)
		}
	}
	return dst
}

func hex4(b []byte) uint16 {
	var n uint16
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		default:
			c = c | 0x20 - 'a' + 10
		}
		n = n<<4 | uint16(c)
	}
	return n
}

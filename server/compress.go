package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/valyala/fasthttp"
)

// Compressed bodies (HTTP; gRPC's gzip is grpc-go's own, registered in grpc.go).
//
// A request with "Content-Encoding: gzip" (or x-gzip) or "deflate" is decompressed before its
// route sees it (observe), whatever the route: the handlers read the decompressed body, and
// Triton's Inference-Header-Content-Length counts the decompressed bytes, as Triton's clients
// write it. Decompression is bounded by the live body limit: the output stops one byte past
// it and the request is answered 413, so a small body that would expand to gigabytes costs at
// most the limit in memory (twice it, while its buffer grows) and the time to inflate that
// much. A stream that does not inflate is
// 400 naming the coding and the error, any other coding 415 naming it and the supported
// ones; "identity" is no coding. "deflate" is the zlib format (RFC 9110, 8.4.1.2), and a raw
// deflate stream, as some clients send, is recognised and accepted too.
//
// A response body of at least Options.CompressMinBytes is compressed when the request's
// Accept-Encoding accepts gzip or deflate (gzip preferred at equal weight; q=0 refuses a
// coding), with "Vary: Accept-Encoding"; smaller bodies never are. Readers, writers and
// buffers are pooled: a request that is not compressed costs one header lookup, a response
// below the threshold one length comparison.

// DefaultCompressMinBytes is the default Options.CompressMinBytes: 1 KiB.
const DefaultCompressMinBytes = 1 << 10

// coding is a content coding the server reads and writes.
type coding uint8

const (
	codingIdentity coding = iota
	codingGzip
	codingDeflate
)

func (c coding) String() string {
	switch c {
	case codingGzip:
		return "gzip"
	case codingDeflate:
		return "deflate"
	}
	return "identity"
}

// supportedCodings names the request codings for the 415 answer.
const supportedCodings = "gzip, deflate, identity"

// contentCoding reads a Content-Encoding value: one coding, case-insensitive, possibly listed
// beside "identity" ones ("gzip", "deflate", "x-gzip", "identity"). Anything else, stacked
// codings included, is 415.
func contentCoding(v []byte) (coding, error) {
	c := codingIdentity
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		var next coding
		switch {
		case len(tok) == 0 || bytes.EqualFold(tok, []byte("identity")):
			continue
		case bytes.EqualFold(tok, []byte("gzip")) || bytes.EqualFold(tok, []byte("x-gzip")):
			next = codingGzip
		case bytes.EqualFold(tok, []byte("deflate")):
			next = codingDeflate
		default:
			return 0, &statusError{fasthttp.StatusUnsupportedMediaType, fmt.Sprintf(
				"Content-Encoding %q not supported: use one of %s", clip(string(tok), 60), supportedCodings)}
		}
		if c != codingIdentity {
			return 0, &statusError{fasthttp.StatusUnsupportedMediaType, fmt.Sprintf(
				"Content-Encoding %q not supported: one coding at most, one of %s", clip(string(bytes.TrimSpace(v)), 60), supportedCodings)}
		}
		c = next
	}
	return c, nil
}

// inflater decompresses request bodies; pooled, one request at a time.
type inflater struct {
	src bytes.Reader
	gz  gzip.Reader
	zl  io.ReadCloser // zlib reader, made on first use
	fl  io.ReadCloser // raw deflate reader, made on first use
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// inflatedBufs pools the buffers of decompressed bodies (*[]byte); one larger than
// maxPooledBody is left to the collector.
var inflatedBufs sync.Pool

const maxPooledBody = 16 << 20

// maxDeflateRatio bounds how much deflate can expand its input (a 258-byte match in about two
// bits): a gzip trailer that claims more is not believed as a size hint.
const maxDeflateRatio = 1032

// inflate decompresses src, coded c, into dst[:0] (grown as needed; it may be nil). Past limit
// bytes of output it stops: 413. A stream that does not inflate is 400.
func inflate(c coding, src []byte, limit int64, dst []byte) ([]byte, error) {
	z := inflaters.Get().(*inflater)
	defer inflaters.Put(z)
	z.src.Reset(src)
	var r io.Reader
	hint := int64(len(src)) * 4
	switch c {
	case codingGzip:
		if len(src) >= 18 { // header (10) + trailer (8): ISIZE is the size mod 2^32 of the last member
			// A size hint only: exact for one honest member (no regrowth), and believed no
			// further than deflate can expand and the limit allows. A stream that says it is
			// over the limit is still inflated up to the limit: it may be corrupt (400).
			if isize := int64(binary.LittleEndian.Uint32(src[len(src)-4:])); isize <= int64(len(src))*maxDeflateRatio {
				hint = isize + 1 // + 1: room for the read that meets the end
			}
		}
		if err := z.gz.Reset(&z.src); err != nil { // a zero Reader is usable after Reset
			return dst, corrupt(c, err)
		}
		z.gz.Multistream(false) // members are read one by one below, each header checked whole
		r = &z.gz
	case codingDeflate:
		// RFC 9110's deflate is zlib (RFC 1950): CMF with method 8 and a header checksum. A
		// raw deflate stream (RFC 1951) rarely passes that check; such a stream is read raw.
		if len(src) >= 2 && src[0]&0x0f == 8 && src[0]>>4 <= 7 && (uint16(src[0])<<8|uint16(src[1]))%31 == 0 {
			if z.zl == nil {
				zr, err := zlib.NewReader(&z.src)
				if err != nil {
					return dst, corrupt(c, err)
				}
				z.zl = zr
			} else if err := z.zl.(zlib.Resetter).Reset(&z.src, nil); err != nil {
				return dst, corrupt(c, err)
			}
			r = z.zl
		} else {
			if z.fl == nil {
				z.fl = flate.NewReader(&z.src)
			} else if err := z.fl.(flate.Resetter).Reset(&z.src, nil); err != nil {
				return dst, corrupt(c, err)
			}
			r = z.fl
		}
	default:
		return append(dst[:0], src...), nil
	}
	hint = min(max(hint, 4<<10), limit+1)
	if int64(cap(dst)) < hint {
		dst = make([]byte, 0, hint)
	}
	dst = dst[:0]
	for {
		if len(dst) == cap(dst) {
			if int64(len(dst)) > limit {
				return dst, tooLargeInflated(c, limit)
			}
			grown := make([]byte, len(dst), min(2*int64(cap(dst)), limit+1)) // doubling: O(log) copies
			copy(grown, dst)
			dst = grown
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > limit {
			return dst, tooLargeInflated(c, limit)
		}
		if err == io.EOF {
			if c != codingGzip || z.src.Len() == 0 {
				return dst, nil
			}
			// Another gzip member follows (RFC 1952, 2.2): a concatenation is one stream.
			if err := z.gz.Reset(&z.src); err != nil {
				return dst, corrupt(c, err)
			}
			z.gz.Multistream(false)
			continue
		}
		if err != nil {
			return dst, corrupt(c, err)
		}
	}
}

func corrupt(c coding, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return badRequest("request body is not a valid %s stream (Content-Encoding: %s): %v", c, c, err)
}

func tooLargeInflated(c coding, limit int64) error {
	return &statusError{fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf(
		"request body too large: decompressed (Content-Encoding: %s) it is over the limit of %d bytes (%s)", c, limit, byteSize(int(limit)))}
}

// inflateRequest replaces a compressed request body by its decompression (a pooled buffer,
// returned with releaseInflated once the request is answered) and drops Content-Encoding. No
// Content-Encoding: nothing to do, nil.
func (s *Server) inflateRequest(ctx *fasthttp.RequestCtx) (*[]byte, error) {
	v := ctx.Request.Header.ContentEncoding()
	if len(v) == 0 {
		return nil, nil
	}
	c, err := contentCoding(v)
	if err != nil || c == codingIdentity {
		return nil, err
	}
	bp, _ := inflatedBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	out, err := inflate(c, ctx.Request.Body(), s.maxBody.Load(), *bp)
	*bp = out[:0]
	if err != nil {
		releaseInflated(bp)
		return nil, err
	}
	ctx.Request.SetBodyRaw(out) // valid until releaseInflated, after the handler
	ctx.Request.Header.Del(fasthttp.HeaderContentEncoding)
	ctx.Request.Header.SetContentLength(len(out))
	return bp, nil
}

func releaseInflated(bp *[]byte) {
	if bp != nil && cap(*bp) <= maxPooledBody {
		inflatedBufs.Put(bp)
	}
}

// acceptedCoding reads an Accept-Encoding value (RFC 9110, 12.5.3): the response coding, gzip
// or deflate, the client accepts with the higher weight (gzip at equal weight), or identity.
// A coding with q=0 is refused; "*" stands for those not listed; a malformed weight drops its
// element.
func acceptedCoding(v []byte) coding {
	qGzip, qDeflate, qStar := -1, -1, -1 // thousandths; -1: not listed
	for len(v) > 0 {
		var el []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			el, v = v, nil
		}
		tok, params := el, []byte(nil)
		if i := bytes.IndexByte(el, ';'); i >= 0 {
			tok, params = el[:i], el[i+1:]
		}
		tok = bytes.TrimSpace(tok)
		q, ok := weight(params)
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(tok, []byte("gzip")) || bytes.EqualFold(tok, []byte("x-gzip")):
			qGzip = max(qGzip, q)
		case bytes.EqualFold(tok, []byte("deflate")):
			qDeflate = max(qDeflate, q)
		case string(tok) == "*":
			qStar = max(qStar, q)
		}
	}
	if qGzip < 0 {
		qGzip = max(qStar, 0)
	}
	if qDeflate < 0 {
		qDeflate = max(qStar, 0)
	}
	switch {
	case qGzip > 0 && qGzip >= qDeflate:
		return codingGzip
	case qDeflate > 0:
		return codingDeflate
	}
	return codingIdentity
}

// weight reads the parameters of an Accept-Encoding element: its q in thousandths (1000 when
// absent), and false when the q is malformed (qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "."
// 0*3("0") ] )).
func weight(params []byte) (int, bool) {
	q := 1000
	for len(params) > 0 {
		var p []byte
		if i := bytes.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
		} else {
			p, params = params, nil
		}
		p = bytes.TrimSpace(p)
		if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
			continue // another parameter: ignored
		}
		val := p[2:]
		if len(val) == 0 || len(val) > 5 || (val[0] != '0' && val[0] != '1') {
			return 0, false
		}
		q = int(val[0]-'0') * 1000
		if len(val) > 1 {
			if val[1] != '.' {
				return 0, false
			}
			scale := 100
			for _, d := range val[2:] {
				if d < '0' || d > '9' {
					return 0, false
				}
				q += int(d-'0') * scale
				scale /= 10
			}
			if q > 1000 {
				return 0, false
			}
		}
	}
	return q, true
}

// deflater compresses response bodies; pooled, one response at a time.
type deflater struct {
	out []byte // the compressed body, appended to by Write
	gz  *gzip.Writer
	zl  *zlib.Writer
}

func (d *deflater) Write(p []byte) (int, error) {
	d.out = append(d.out, p...)
	return len(p), nil
}

var deflaters = sync.Pool{New: func() any { return new(deflater) }}

// responseLevel is the compression level of responses: the fastest, for a response written
// on every request's path (policy outputs are small and compress little better slower).
const responseLevel = gzip.BestSpeed

// compressResponse compresses the response body when it is at least compressMin bytes and the
// request accepts gzip or deflate, and says Vary: Accept-Encoding on every body that size.
func (s *Server) compressResponse(ctx *fasthttp.RequestCtx) {
	if s.compressMin <= 0 || ctx.Response.IsBodyStream() {
		return
	}
	body := ctx.Response.Body()
	if len(body) < s.compressMin || len(ctx.Response.Header.ContentEncoding()) > 0 {
		return
	}
	ctx.Response.Header.Add(fasthttp.HeaderVary, fasthttp.HeaderAcceptEncoding)
	c := acceptedCoding(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding))
	if c == codingIdentity {
		return
	}
	d := deflaters.Get().(*deflater)
	d.out = d.out[:0]
	var w io.WriteCloser
	if c == codingGzip {
		if d.gz == nil {
			d.gz, _ = gzip.NewWriterLevel(d, responseLevel)
		} else {
			d.gz.Reset(d)
		}
		w = d.gz
	} else {
		if d.zl == nil {
			d.zl, _ = zlib.NewWriterLevel(d, responseLevel)
		} else {
			d.zl.Reset(d)
		}
		w = d.zl
	}
	if _, err := w.Write(body); err != nil || w.Close() != nil {
		deflaters.Put(d)
		return // cannot happen writing to memory; answer uncompressed
	}
	// The compressed bytes become the body, and the body's old buffer the deflater's next one:
	// no copy, no allocation once both have grown.
	d.out = ctx.Response.SwapBody(d.out)[:0]
	ctx.Response.Header.SetContentEncoding(c.String())
	if cap(d.out) <= maxPooledBody {
		deflaters.Put(d)
	}
}

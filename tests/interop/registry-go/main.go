// Command registry-go-client serializes one Avro record with confluent-kafka-go's official
// avrov2.Serializer against a schema registry, the way a Go producer would, and reports the schema
// id the serializer put in the Confluent wire-format header.
//
// Contract: one record, one topic, TopicNameStrategy (subject "<topic>-value"), UseLatestVersion
// off, AutoRegisterSchemas as given. The schema is parsed by hamba/avro (which the serializer uses
// underneath) and the serializer sends that parse's String() form, not the text given here: so this
// is exactly the spelling a Go user's producer puts on the wire. It prints one JSON line on stdout:
//
//	{"id": N, "subject": "...", "sent_schema": "..."}                 on success (exit 0)
//	{"error": "...", "error_code": N, "subject": "...", "sent_schema": "..."}  on failure (exit 1)
//
// error_code is the registry's JSON error_code (e.g. 40403), or 0 when the failure was not an
// answer from the registry. Usage errors exit 2.
//
// Usage: registry-go-client URL TOPIC AUTO_REGISTER(true|false) SCHEMA
// where SCHEMA is the schema's JSON text, or @path to read it from a file.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/rest"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/avrov2"
	"github.com/hamba/avro/v2"
)

// parsed is the schema the record carries. The serializer asks the message for its schema through
// a Schema() method (generic records have no struct to derive one from), so it has to live where
// that method can reach it; this is a one-shot command, so a package variable is enough.
var parsed avro.Schema

// record is a generic Avro record: hamba/avro marshals a map[string]any against a record schema.
type record map[string]any

// Schema is how avrov2.Serializer learns the writer schema of a value that is not a struct.
func (*record) Schema() avro.Schema { return parsed }

type result struct {
	ID         *int   `json:"id,omitempty"`
	Error      string `json:"error,omitempty"`
	ErrorCode  *int   `json:"error_code,omitempty"`
	Subject    string `json:"subject"`
	SentSchema string `json:"sent_schema"`
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: registry-go-client URL TOPIC AUTO_REGISTER(true|false) SCHEMA|@FILE")
		os.Exit(2)
	}
	url, topic := os.Args[1], os.Args[2]
	autoRegister, err := strconv.ParseBool(os.Args[3])
	if err != nil {
		fmt.Fprintf(os.Stderr, "registry-go-client: AUTO_REGISTER must be true or false, not %q\n", os.Args[3])
		os.Exit(2)
	}
	text := os.Args[4]
	if len(text) > 0 && text[0] == '@' {
		data, readErr := os.ReadFile(text[1:])
		if readErr != nil {
			fmt.Fprintf(os.Stderr, "registry-go-client: %v\n", readErr)
			os.Exit(2)
		}
		text = string(data)
	}

	out := result{Subject: topic + "-value"}
	id, err := serialize(url, topic, autoRegister, text, &out)
	if err != nil {
		out.Error = err.Error()
		code := 0
		var restErr *rest.Error
		if errors.As(err, &restErr) {
			code = restErr.Code
		}
		out.ErrorCode = &code
	} else {
		out.ID = &id
	}
	if encErr := json.NewEncoder(os.Stdout).Encode(out); encErr != nil {
		fmt.Fprintf(os.Stderr, "registry-go-client: %v\n", encErr)
		os.Exit(1)
	}
	if err != nil {
		os.Exit(1)
	}
}

// serialize runs the official serializer once and returns the id from the payload's 5-byte header
// (magic byte 0, then the id big-endian), i.e. what a consumer would see, not what a client call
// returned.
func serialize(url, topic string, autoRegister bool, text string, out *result) (int, error) {
	var err error
	parsed, err = avro.Parse(text)
	if err != nil {
		return 0, fmt.Errorf("parse schema: %w", err)
	}
	// The serializer registers or looks up SchemaInfo{Schema: schema.String()}: report that text.
	out.SentSchema = parsed.String()
	value, err := sample(parsed)
	if err != nil {
		return 0, err
	}
	rec, ok := value.(map[string]any)
	if !ok {
		return 0, errors.New("schema: the top-level type must be a record")
	}

	client, err := schemaregistry.NewClient(schemaregistry.NewConfig(url))
	if err != nil {
		return 0, err
	}
	defer client.Close()
	conf := avrov2.NewSerializerConfig()
	conf.AutoRegisterSchemas = autoRegister
	conf.UseLatestVersion = false
	ser, err := avrov2.NewSerializer(client, serde.ValueSerde, conf)
	if err != nil {
		return 0, err
	}
	defer ser.Close()
	msg := record(rec)
	payload, err := ser.Serialize(topic, &msg)
	if err != nil {
		return 0, err
	}
	if len(payload) < 5 || payload[0] != 0 {
		return 0, fmt.Errorf("payload has no Confluent wire-format header: % x", payload[:min(len(payload), 5)])
	}
	return int(binary.BigEndian.Uint32(payload[1:5])), nil
}

// sample builds a value that fits schema s: the id is what this command reports, so any valid
// record will do; it is built from the schema so that any record of primitives can be sent.
func sample(s avro.Schema) (any, error) {
	switch t := s.(type) {
	case *avro.RecordSchema:
		rec := map[string]any{}
		for _, f := range t.Fields() {
			v, err := sample(f.Type())
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", f.Name(), err)
			}
			rec[f.Name()] = v
		}
		return rec, nil
	case *avro.UnionSchema:
		if t.Nullable() {
			return nil, nil
		}
		return nil, errors.New("only nullable unions are supported")
	case *avro.EnumSchema:
		return t.Symbols()[0], nil
	case *avro.ArraySchema:
		return []any{}, nil
	case *avro.MapSchema:
		return map[string]any{}, nil
	case *avro.RefSchema:
		return sample(t.Schema())
	}
	switch s.Type() {
	case avro.Null:
		return nil, nil
	case avro.Boolean:
		return true, nil
	case avro.Int:
		return int32(1), nil
	case avro.Long:
		return int64(1), nil
	case avro.Float:
		return float32(1), nil
	case avro.Double:
		return float64(1), nil
	case avro.String:
		return "x", nil
	case avro.Bytes:
		return []byte("x"), nil
	}
	return nil, fmt.Errorf("no sample value for type %s", s.Type())
}

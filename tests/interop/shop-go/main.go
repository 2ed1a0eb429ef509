// Command shop-go-client is a Go client of the shop, built from stubs that buf generated from
// proto/ with proto/buf.gen.go.yaml (never committed: build.sh generates them into ./gen): what a
// Go team gets from "Generate a client" in the README, placing one order end to end.
//
// Contract: it places ONE order with OrdersService.PlaceOrder (as the customer the access token
// names, or -customer), sending a W3C traceparent it made itself (a fresh trace id and span id,
// sampled), then polls OrdersService.GetOrder until the order is CONFIRMED or CANCELLED or the
// -timeout deadline passes. It prints one JSON line on stdout:
//
//	{"order_id": "...", "status": "ORDER_STATUS_CONFIRMED", "trace_id": "<32 hex>",
//	 "span_id": "<16 hex>", "ms": N}
//
// span_id is the parent span id in the traceparent it sent, so the orders SERVER span of the
// PlaceOrder call is its child in `mesh trace <trace_id>`. ms is the time from sending PlaceOrder
// to reading the final status. Exit 0 when CONFIRMED; 1 when the order ended otherwise, the
// deadline passed or a call failed (one sentence on stderr; the JSON line still printed once an
// order exists); 2 on a usage error.
//
// Stock is not its business: SetStock needs an admin token, which a customer does not hold.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	commonv1 "github.com/meshkit/meshkit/gen/go/shop/common/v1"
	ordersv1 "github.com/meshkit/meshkit/gen/go/shop/orders/v1"
)

// pollInterval is how long to wait between two GetOrder calls: a saga here takes tens of
// milliseconds to a few seconds, and a tighter loop only loads the server.
const pollInterval = 50 * time.Millisecond

// result is the JSON line printed on stdout.
type result struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
	Ms      int64  `json:"ms"`
}

// usageError is a mistake in the command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	err := run(os.Args[1:])
	var usage usageError
	switch {
	case err == nil:
		return
	case errors.Is(err, flag.ErrHelp):
		return
	case errors.As(err, &usage):
		fmt.Fprintf(os.Stderr, "shop-go-client: %s (see --help)\n", usage.msg)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "shop-go-client: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("shop-go-client", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), `usage: shop-go-client [flags]

Places one order on the shop's orders service with Go stubs generated from proto/, sending a
traceparent of its own, and waits until the order is CONFIRMED. Prints one JSON line:
{"order_id", "status", "trace_id", "span_id", "ms"}. Exit 0 when CONFIRMED, 1 otherwise.

Flags:
`)
		flags.PrintDefaults()
	}
	orders := flags.String("orders", "127.0.0.1:50051", "address of the orders service (host:port)")
	token := flags.String("token", "", "access token, e.g. what 'mesh token --role customer --subject c-go' prints (default $MESH_TOKEN)")
	customer := flags.String("customer", "", "customer id of the order (default: the token's subject)")
	sku := flags.String("sku", "", "SKU to order (required; stock it first: SetStock needs an admin)")
	quantity := flags.Int("quantity", 1, "how many")
	timeout := flags.Duration("timeout", 30*time.Second, "deadline for placing the order and seeing it CONFIRMED")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if flags.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", flags.Arg(0))}
	}
	if *token == "" {
		*token = os.Getenv("MESH_TOKEN")
	}
	if *token == "" {
		return usageError{"no access token: pass -token or set MESH_TOKEN"}
	}
	if *sku == "" {
		return usageError{"-sku is required"}
	}
	if *quantity < 1 {
		return usageError{"-quantity must be at least 1"}
	}
	if *customer == "" {
		subject, err := tokenSubject(*token)
		if err != nil {
			return usageError{fmt.Sprintf("cannot read the customer from the token (%v); pass -customer", err)}
		}
		*customer = subject
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.NewClient(*orders, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("cannot dial %s: %v", *orders, err)
	}
	defer conn.Close()
	client := ordersv1.NewOrdersServiceClient(conn)

	traceID, spanID := randomHex(16), randomHex(8)
	auth := metadata.Pairs("authorization", "Bearer "+*token)
	placeCtx := metadata.NewOutgoingContext(ctx, metadata.Join(auth,
		metadata.Pairs("traceparent", fmt.Sprintf("00-%s-%s-01", traceID, spanID))))
	start := time.Now()
	placed, err := client.PlaceOrder(placeCtx, &ordersv1.PlaceOrderRequest{
		RequestId:  "go-" + randomHex(8),
		CustomerId: *customer,
		Lines: []*ordersv1.OrderLine{{
			Sku:       *sku,
			Quantity:  int32(*quantity),
			UnitPrice: &commonv1.Money{CurrencyCode: "EUR", Units: 3},
		}},
		PaymentToken: "tok_visa",
		ShippingAddress: &commonv1.Address{
			Name: "Grace Hopper", Line1: "Unter den Linden 1", City: "Berlin",
			PostalCode: "10117", CountryCode: "DE",
		},
	})
	if err != nil {
		return fmt.Errorf("PlaceOrder failed: %s", describe(err))
	}

	out := result{OrderID: placed.GetOrderId(), TraceID: traceID, SpanID: spanID}
	readCtx := metadata.NewOutgoingContext(ctx, auth)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		got, err := client.GetOrder(readCtx, &ordersv1.GetOrderRequest{OrderId: out.OrderID})
		if err != nil {
			out.Ms = time.Since(start).Milliseconds()
			printResult(out)
			return fmt.Errorf("GetOrder %s failed: %s", out.OrderID, describe(err))
		}
		state := got.GetOrder().GetStatus()
		out.Status = state.String()
		if state != ordersv1.OrderStatus_ORDER_STATUS_PENDING {
			out.Ms = time.Since(start).Milliseconds()
			printResult(out)
			if state != ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED {
				return fmt.Errorf("order %s ended %s: %s", out.OrderID, out.Status,
					got.GetOrder().GetCancellationReason())
			}
			return nil
		}
		select {
		case <-ctx.Done():
			out.Ms = time.Since(start).Milliseconds()
			printResult(out)
			return fmt.Errorf("order %s still %s after %s", out.OrderID, out.Status, *timeout)
		case <-ticker.C:
		}
	}
}

// describe is a gRPC error as "CODE: message".
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

func printResult(out result) {
	line, _ := json.Marshal(out) // a struct of strings and an int: cannot fail
	fmt.Println(string(line))
}

// randomHex is n random bytes in lower-case hex (W3C trace and span ids; never all zero in
// practice, which the spec forbids, at 2^-64 odds or less).
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux; nothing sensible to do if it did
	}
	return hex.EncodeToString(b)
}

// tokenSubject is the "sub" claim of a JWT, read without verifying it: the server verifies;
// the client only needs to know whom to place the order for.
func tokenSubject(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("payload is not base64url: %v", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Sub == "" {
		return "", errors.New("no sub claim")
	}
	return claims.Sub, nil
}

"""The demo shop: what one request does in each of its seven services.

A request is planned before it is sent: the handlers below build a tree of PlannedSpan,
times in milliseconds from the start of the trace, and dashboards.demo.telemetry replays
the tree through the OpenTelemetry SDK at a chosen moment. Planning first is what lets a
live trace end "now" and a back-dated one sit anywhere in the past, without sleeping
through simulated latencies.

The services, and the peers they call that send no telemetry of their own (Sightline
names them from the client spans' attributes and shows them on the service map):

    frontend   GET /, GET /product/{id}, POST /cart, POST /checkout   redis, postgresql shop
    cart       carts kept in redis                                    redis
    checkout   POST /orders: cart, inventory, payment, shipping, the orders table; then
               publishes order-confirmation (rabbitmq; the email worker consumes it) and
               order-events (kafka; nothing instrumented consumes it)
    payment    fraud score, then the charge through the card gateway  api.payments.example
    inventory  stock and reservations                                 postgresql shop
    shipping   shipments                                              redis, postgresql shop
    email      consumes order-confirmation, sends the mail            smtp.mail.example
"""

import math
from dataclasses import dataclass, field

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = "server", "client", "producer", "consumer", "internal"

VERSIONS = {"frontend": "2.14.0", "cart": "1.8.3", "checkout": "3.2.1", "payment": "2.0.5",
            "inventory": "1.12.0", "shipping": "1.3.2", "email": "1.1.4"}
SERVICES = tuple(VERSIONS)
ADDRESSES = {service: f"10.0.1.{index + 10}" for index, service in enumerate(SERVICES)}  # inside the cluster

FAULTS = {
    "payment-slow": "every charge waits 0.6-1.2 s for a connection to the card gateway: payment's charge "
                    "dominates checkout's critical path and the checkout latency SLO burns",
    "inventory-errors": "a quarter of inventory's stock reservations time out: checkout answers 503 and "
                        "the checkout availability SLO burns",
}

# The instrumentation libraries that would have made each kind of span in a real shop.
HTTP_SERVER, HTTP_CLIENT = "opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.requests"
POSTGRES, REDIS = "opentelemetry.instrumentation.psycopg", "opentelemetry.instrumentation.redis"
RABBITMQ, KAFKA = "opentelemetry.instrumentation.pika", "opentelemetry.instrumentation.confluent_kafka"

ROUTES = (("GET /", 30), ("GET /product/{id}", 40), ("POST /cart", 18), ("POST /checkout", 12))  # name, share
PRODUCTS = 400
USERS = 5000
CART_IDLE_SECONDS = 30 * 60  # an untouched cart is abandoned after this long
STATEMENT_TIMEOUT_MS = 1500
# How often things go wrong without a fault: a few requests in a hundred see an error somewhere.
STOCK_TIMEOUT_CHANCE = 0.005  # inventory's stock lookup hits the statement timeout
RESERVATION_TIMEOUT_CHANCE = 0.001  # kept low: checkout's availability SLO is 99.5 %
DECLINE_CHANCE = 0.03  # the card gateway declines the card
SMTP_FAILURE_CHANCE = 0.01
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
# Exceptions as the services' instrumentation would record them: (type, message, stack trace).
EXCEPTIONS = {
    "statement timeout": (
        "psycopg.errors.QueryCanceled", "canceling statement due to statement timeout",
        'Traceback (most recent call last):\n  File "/app/inventory/stock.py", line 58, in {where}\n'
        "    cursor.execute(query, params)\npsycopg.errors.QueryCanceled: canceling statement due to statement timeout\n"),
    "card declined": (
        "payments.gateway.CardDeclined", "card declined: insufficient funds",
        'Traceback (most recent call last):\n  File "/app/payment/charges.py", line 91, in charge\n'
        "    receipt = gateway.charge(card_token, amount)\n  File \"/app/payment/gateway.py\", line 37, in charge\n"
        "    raise CardDeclined(body['decline_code'])\npayments.gateway.CardDeclined: card declined: insufficient funds\n"),
    "smtp disconnected": (
        "smtplib.SMTPServerDisconnected", "Connection unexpectedly closed",
        'Traceback (most recent call last):\n  File "/app/email/send.py", line 24, in send_confirmation\n'
        "    smtp.send_message(message)\nsmtplib.SMTPServerDisconnected: Connection unexpectedly closed\n"),
}
REASONS = {402: "Payment Required", 404: "Not Found", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(eq=False)
class PlannedSpan:
    """One span of a planned trace; start, end and the clock `now` are ms from the trace start.

    While a handler runs, `now` is how far the span's own work has got: a child starts at
    its parent's `now`, and a finished child moves the parent's clock on to its end, unless
    it is detached (a message consumer: the publisher does not wait for it).
    """

    service: str
    name: str
    kind: str
    scope: str  # the instrumentation scope that records it
    start: float
    attributes: dict
    parent: "PlannedSpan | None" = None
    detached: bool = False
    end: float | None = None
    error: str | None = None  # None: not failed; else the status description
    events: list = field(default_factory=list)  # (name, at ms, attributes)
    children: list = field(default_factory=list)

    def __post_init__(self):
        self.now = self.start

    def child(self, name, kind, scope, attributes, service=None, at=None, detached=False):
        span = PlannedSpan(service or self.service, name, kind, scope, self.now if at is None else at, attributes,
                           parent=self, detached=detached)
        self.children.append(span)
        return span

    def work(self, ms):
        self.now += ms

    def finish(self):
        self.end = self.now
        if self.parent is not None and not self.detached:
            self.parent.now = max(self.parent.now, self.end)
        return self

    def fail(self, message, exception=None, where=""):
        """Status ERROR; with `exception` (a key of EXCEPTIONS), the exception event too."""
        self.error = message
        if exception:
            kind, text, stack = EXCEPTIONS[exception]
            self.events.append(("exception", self.now, {"exception.type": kind, "exception.message": text,
                                                        "exception.stacktrace": stack.format(where=where)}))

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def trace_end(self):
        return max(span.end for span in self.walk())


class Shop:
    """Plans the shop's requests: request(at) returns the root PlannedSpan of one trace.

    Latencies are lognormal around a median, so most requests are quick and a few are
    slow, as in real systems. The shop remembers who has a cart (checkouts come from them)
    and how many items all open carts hold (the cart service's gauge).
    """

    def __init__(self, rng, fault=None):
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.rng, self.fault = rng, fault
        self.faulty = False  # whether the request being planned suffers the fault
        self.carts = {}  # user -> [items, last touched (epoch s)]
        self.cart_items = 0
        self._expired_at = 0.0

    def request(self, at, fault=True):
        """One visitor's request at `at` (epoch seconds); fault=False: as if the fault were off."""
        self.faulty = fault and self.fault is not None
        self._expire_carts(at)
        route = self.rng.choices([r for r, _ in ROUTES], weights=[w for _, w in ROUTES])[0]
        if route == "POST /checkout" and not self.carts:
            route = "POST /cart"  # nobody has anything to buy yet
        if route == "GET /":
            return self._page("GET", "/", "/", self._home)
        if route == "GET /product/{id}":
            product = self._product_id()
            return self._page("GET", "/product/{id}", f"/product/{product}", lambda span: self._product(span, product))
        if route == "POST /cart":
            user, product = self._user(), self._product_id()
            return self._page("POST", "/cart", "/cart", lambda span: self._add_to_cart(span, user, product, at))
        user = self.rng.choice(list(self.carts))
        return self._page("POST", "/checkout", "/checkout", lambda span: self._checkout(span, user))

    def ms(self, median, spread=0.4):
        return median * math.exp(self.rng.gauss(0.0, spread))

    def _fault(self, name):
        return self.faulty and self.fault == name

    def _user(self):
        return f"u{self.rng.randrange(1, USERS):05d}"

    def _product_id(self):
        return 1 + int(PRODUCTS * self.rng.random() ** 2.5)  # a few products are much more popular

    def _expire_carts(self, at):
        if at - self._expired_at < 60:
            return
        self._expired_at = at
        for user, (items, touched) in list(self.carts.items()):
            if at - touched > CART_IDLE_SECONDS:
                del self.carts[user]
                self.cart_items -= items

    # --- How services talk: HTTP, SQL, Redis, messages --------------------------------------

    def _page(self, method, route, path, handler):
        """The frontend's SERVER span for a browser's request: the root of the trace."""
        root = PlannedSpan("frontend", f"{method} {route}", SERVER, HTTP_SERVER, 0.0, {
            "http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "https",
            "server.address": "shop.example.com", "server.port": 443, "network.protocol.version": "2",
            "client.address": f"198.51.100.{self.rng.randrange(1, 255)}",
            "user_agent.original": self.rng.choice(USER_AGENTS)})
        root.work(self.ms(0.8))
        self._respond(root, handler(root))
        return root

    def _respond(self, server, status):
        server.attributes["http.response.status_code"] = status
        if status >= 500:  # a server failed only when it answers 5xx (HTTP semantic conventions)
            server.attributes["error.type"] = str(status)
            server.fail(f"{status} {REASONS.get(status, '')}".strip())
        server.work(self.ms(0.3))
        server.finish()

    def _call(self, caller, service, method, route, path, handler):
        """caller's HTTP CLIENT span and `service`'s SERVER span under it; handler(server) -> status."""
        url = f"http://{service}:8080{path}"
        client = caller.child(f"{method} {route}", CLIENT, HTTP_CLIENT, {
            "http.request.method": method, "url.full": url, "url.template": route,
            "server.address": service, "server.port": 8080, "network.protocol.version": "1.1"})
        client.work(self.ms(0.5, 0.5))
        server = client.child(f"{method} {route}", SERVER, HTTP_SERVER, {
            "http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "http",
            "server.address": service, "server.port": 8080, "network.protocol.version": "1.1",
            "client.address": ADDRESSES[caller.service],
            "user_agent.original": "python-requests/2.32.3"}, service=service)
        server.work(self.ms(0.3))
        status = handler(server)
        self._respond(server, status)
        client.work(self.ms(0.5, 0.5))
        client.attributes["http.response.status_code"] = status
        if status >= 400:  # a client saw a failure for any 4xx/5xx answer
            client.attributes["error.type"] = str(status)
            client.fail("")
        client.finish()
        return status

    def _sql(self, caller, operation, table, query, median, timeout_chance=0.0, where=""):
        """A query to the shop's PostgreSQL; False when it hit the statement timeout."""
        span = caller.child(f"{operation} {table}", CLIENT, POSTGRES, {
            "db.system": "postgresql", "db.system.name": "postgresql", "db.namespace": "shop",
            "db.operation.name": operation, "db.collection.name": table, "db.query.text": query,
            "server.address": "postgres", "server.port": 5432})
        if self.rng.random() < timeout_chance:
            span.work(STATEMENT_TIMEOUT_MS + self.ms(3))
            span.attributes.update({"error.type": "psycopg.errors.QueryCanceled", "db.response.status_code": "57014"})
            span.fail("canceling statement due to statement timeout", "statement timeout", where)
            span.finish()
            return False
        span.work(self.ms(median, 0.5))
        span.finish()
        return True

    def _redis(self, caller, command, key, median=0.3):
        # named as the database conventions name a call with no collection: operation and server
        span = caller.child(f"{command} redis:6379", CLIENT, REDIS, {
            "db.system": "redis", "db.system.name": "redis", "db.operation.name": command,
            "db.query.text": f"{command} {key}", "server.address": "redis", "server.port": 6379})
        span.work(self.ms(median, 0.5))
        span.finish()

    def _publish(self, caller, system, destination, scope, attributes):
        span = caller.child(f"publish {destination}", PRODUCER, scope, {
            "messaging.system": system, "messaging.destination.name": destination,
            "messaging.operation.type": "send", "messaging.operation.name": "publish",
            "messaging.operation": "publish", **attributes})
        span.work(self.ms(0.9, 0.5))
        return span.finish()

    # --- frontend --------------------------------------------------------------------------

    def _home(self, span):
        user = self._user()
        self._redis(span, "GET", f"session:{user}")
        self._call(span, "cart", "GET", "/carts/{user_id}", f"/carts/{user}", lambda s: self._cart_view(s, user))
        span.work(self.ms(9))  # render the page
        return 200

    def _product(self, span, product):
        sku = f"SKU-{product:05d}"
        self._redis(span, "GET", f"product:{product}")
        if self.rng.random() < 0.15:  # not in the cache
            self._sql(span, "SELECT", "products",
                      "SELECT id, name, price, description FROM products WHERE id = $1", 2.5)
            self._redis(span, "SET", f"product:{product}")
        # a failed stock lookup is shown as "availability unknown": the page still works
        self._call(span, "inventory", "GET", "/stock/{sku}", f"/stock/{sku}", lambda s: self._stock(s, sku))
        span.work(self.ms(11))
        return 200

    def _add_to_cart(self, span, user, product, at):
        sku, quantity = f"SKU-{product:05d}", self.rng.choice((1, 1, 1, 2, 3))
        self._redis(span, "GET", f"session:{user}")
        status = self._call(span, "cart", "POST", "/carts/{user_id}/items", f"/carts/{user}/items",
                            lambda s: self._cart_add(s, user, sku, quantity, at))
        span.work(self.ms(3))
        return 303 if status < 400 else 502

    def _checkout(self, span, user):
        self._redis(span, "GET", f"session:{user}")
        status = self._call(span, "checkout", "POST", "/orders", "/orders", lambda s: self._place_order(s, user))
        span.work(self.ms(4))
        if status == 201:
            return 303  # on to the order confirmation page
        return 402 if status == 402 else 502

    # --- cart ------------------------------------------------------------------------------

    def _cart_view(self, span, user):
        self._redis(span, "HGETALL", f"cart:{user}")
        span.work(self.ms(1.2))
        return 200

    def _cart_add(self, span, user, sku, quantity, at):
        stock = self._call(span, "inventory", "GET", "/stock/{sku}", f"/stock/{sku}", lambda s: self._stock(s, sku))
        if stock >= 500:
            return 503
        self._redis(span, "HINCRBY", f"cart:{user}")
        self._redis(span, "EXPIRE", f"cart:{user}")
        span.work(self.ms(1.0))
        items = self.carts.setdefault(user, [0, at])
        items[0] += quantity
        items[1] = at
        self.cart_items += quantity
        return 201

    def _cart_clear(self, span, user):
        self._redis(span, "DEL", f"cart:{user}")
        self.cart_items -= self.carts.pop(user, [0])[0]
        return 204

    # --- checkout --------------------------------------------------------------------------

    def _place_order(self, span, user):
        order = f"ord_{self.rng.getrandbits(40):010x}"
        amount = round(self.rng.lognormvariate(math.log(60), 0.6), 2)
        self._call(span, "cart", "GET", "/carts/{user_id}", f"/carts/{user}", lambda s: self._cart_view(s, user))
        span.work(self.ms(2))  # price the order
        if self._call(span, "inventory", "POST", "/reservations", "/reservations", self._reserve) >= 500:
            return 503
        charged = self._call(span, "payment", "POST", "/charges", "/charges", lambda s: self._charge(s, amount))
        if charged >= 400:
            reservation = f"res_{self.rng.getrandbits(32):08x}"
            self._call(span, "inventory", "DELETE", "/reservations/{id}", f"/reservations/{reservation}",
                       self._release)
            return 402 if charged == 402 else 502
        self._call(span, "shipping", "POST", "/shipments", "/shipments", self._ship)
        self._sql(span, "INSERT", "orders",
                  "INSERT INTO orders (id, user_id, total, status) VALUES ($1, $2, $3, 'paid')", 2.2)
        self._call(span, "cart", "DELETE", "/carts/{user_id}", f"/carts/{user}", lambda s: self._cart_clear(s, user))
        confirmation = self._publish(span, "rabbitmq", "order-confirmation", RABBITMQ, {
            "messaging.rabbitmq.destination.routing_key": "order-confirmation", "messaging.message.id": order,
            "server.address": "rabbitmq", "server.port": 5672})
        self._consume_confirmation(confirmation, order)
        self._publish(span, "kafka", "order-events", KAFKA, {
            "messaging.kafka.message.key": order, "messaging.destination.partition.id": str(self.rng.randrange(6)),
            "server.address": "kafka", "server.port": 9092})
        span.work(self.ms(1))
        return 201

    # --- payment ---------------------------------------------------------------------------

    def _charge(self, span, amount):
        fraud = span.child("score fraud risk", INTERNAL, "shop.payment", {"payment.amount": amount})
        fraud.work(self.ms(12, 0.3))
        fraud.finish()
        charge = span.child("charge", INTERNAL, "shop.payment", {"payment.amount": amount, "payment.currency": "USD"})
        charge.work(self.ms(1.0))
        if self._fault("payment-slow"):  # the gateway connection pool is exhausted
            charge.events.append(("waiting for a gateway connection", charge.now, {"pool.size": 10}))
            charge.work(self.rng.uniform(600, 1200))
        declined = self.rng.random() < DECLINE_CHANCE
        gateway = charge.child("POST /v1/charges", CLIENT, HTTP_CLIENT, {
            "http.request.method": "POST", "url.full": "https://api.payments.example/v1/charges",
            "url.template": "/v1/charges", "server.address": "api.payments.example", "server.port": 443,
            "http.response.status_code": 402 if declined else 200})
        gateway.work(self.ms(140, 0.35))
        if declined:
            gateway.attributes["error.type"] = "402"
            gateway.fail("")
        gateway.finish()
        if declined:
            charge.fail("card declined", "card declined")
            charge.finish()
            return 402
        charge.finish()
        self._sql(span, "INSERT", "payments",
                  "INSERT INTO payments (order_id, amount, currency, gateway_ref) VALUES ($1, $2, $3, $4)", 2.0)
        return 201

    # --- inventory -------------------------------------------------------------------------

    def _stock(self, span, sku):
        found = self._sql(span, "SELECT", "stock", "SELECT quantity, reserved FROM stock WHERE sku = $1", 1.5,
                          timeout_chance=STOCK_TIMEOUT_CHANCE, where="stock_level")
        span.work(self.ms(0.6))
        return 200 if found else 503

    def _reserve(self, span):
        chance = 0.25 if self._fault("inventory-errors") else RESERVATION_TIMEOUT_CHANCE
        if not self._sql(span, "UPDATE", "stock",
                         "UPDATE stock SET reserved = reserved + $1 WHERE sku = $2 AND quantity - reserved >= $1",
                         4.0, timeout_chance=chance, where="reserve"):
            return 503
        self._sql(span, "INSERT", "reservations",
                  "INSERT INTO reservations (id, sku, quantity, expires_at) VALUES ($1, $2, $3, $4)", 1.8)
        return 201

    def _release(self, span):
        self._sql(span, "UPDATE", "stock", "UPDATE stock SET reserved = reserved - $1 WHERE sku = $2", 3.0)
        return 204

    # --- shipping --------------------------------------------------------------------------

    def _ship(self, span):
        self._redis(span, "GET", "rates:zones")
        span.work(self.ms(6))  # rate the parcel
        self._sql(span, "INSERT", "shipments",
                  "INSERT INTO shipments (order_id, carrier, service_level, rate) VALUES ($1, $2, $3, $4)", 2.4)
        return 201

    # --- email -----------------------------------------------------------------------------

    def _consume_confirmation(self, publish, order):
        """The email worker takes the message off the queue a little later: a detached CONSUMER span."""
        span = publish.child("process order-confirmation", CONSUMER, RABBITMQ, {
            "messaging.system": "rabbitmq", "messaging.destination.name": "order-confirmation",
            "messaging.operation.type": "process", "messaging.operation.name": "consume",
            "messaging.operation": "process", "messaging.message.id": order,
            "server.address": "rabbitmq", "server.port": 5672},
            service="email", at=publish.end + self.ms(8, 0.8), detached=True)
        render = span.child("render order-confirmation", INTERNAL, "shop.email", {"email.template": "order-confirmation"})
        render.work(self.ms(5))
        render.finish()
        smtp = span.child("smtp send", CLIENT, "shop.email", {
            "server.address": "smtp.mail.example", "server.port": 587, "network.protocol.name": "smtp"})
        smtp.work(self.ms(90, 0.5))
        if self.rng.random() < SMTP_FAILURE_CHANCE:
            smtp.attributes["error.type"] = "smtplib.SMTPServerDisconnected"
            smtp.fail("Connection unexpectedly closed", "smtp disconnected")
            span.fail("Connection unexpectedly closed")
        smtp.finish()
        span.work(self.ms(0.5))
        span.finish()

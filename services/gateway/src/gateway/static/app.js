/*
 * The shop page's script: plain JavaScript, no framework, no build, nothing from another origin.
 *
 * Contract:
 * - Sign-in is OAuth 2 authorization code + PKCE (S256) as the public client in /config.json
 *   ("shop-web"), redirect URI = this page. The answer is accepted only when its `state` is the
 *   one this tab sent and its `iss` is the configured issuer (RFC 9207, mix-up defence); the
 *   code is then stripped from the URL and exchanged once at the issuer's /token.
 * - Every API call goes to this origin (the gateway) with the access token as a Bearer token; a
 *   401 or an access token about to expire is answered by one refresh (refresh_token grant),
 *   then the call is tried once more.
 * - Errors are shown in words: an RFC 9457 problem's title and detail with its field violations,
 *   an OAuth error's code and description, or what failed on the network.
 * - The page writes text only (textContent, never innerHTML): no answer of a server is parsed as
 *   markup.
 * - Checkout runs the experiment "checkout-cta": once signed in, the page asks the gateway for the
 *   person's variant (GET /v1/experiments/checkout-cta/assignment, which records the exposure)
 *   and labels the order button with it (#place's data-variant says which). Anything but a
 *   known variant, an error included, shows today's button: an experiment never breaks checkout.
 */
'use strict';

const KEYS = {
  pkce: 'shop.pkce', // the login in flight: verifier, state
  tokens: 'shop.tokens',
  traces: 'shop.traces', // order id -> trace id of the POST that placed it
  consistency: 'shop.consistency', // the last write this tab made, for read-your-writes
};
const STATUS_WORDS = {
  ORDER_STATUS_PENDING: 'PENDING',
  ORDER_STATUS_CONFIRMED: 'CONFIRMED',
  ORDER_STATUS_CANCELLED: 'CANCELLED',
};
// The checkout experiment's variants, by key: the order button's label. "control" is today's.
const CHECKOUT_EXPERIMENT = 'checkout-cta';
const CHECKOUT_LABELS = { control: 'Place order', 'buy-now': 'Buy now' };
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 2000;
const POLL_GIVE_UP_MS = 120000;
// Refresh this long before the access token expires, so a call never races its expiry.
const EXPIRY_MARGIN_MS = 30000;

const app = {
  config: null, // {issuer, client_id, jaeger_url}
  // Tokens live in memory and in sessionStorage. sessionStorage is readable by any script of
  // this origin, so an XSS would expose them; the page is kept XSS-free instead (text-only DOM
  // writes, a CSP that forbids inline and foreign script). In return a reload, or the way back
  // from a Jaeger tab, keeps the person signed in, and the tokens still die with the tab (unlike
  // localStorage, which every tab shares and nothing clears). The verifier and state must
  // survive the round trip to identity, which replaces this page, hence sessionStorage too.
  tokens: null, // {access_token, refresh_token, expires_at, sub}
  refreshing: null, // the refresh in flight: callers share it (refresh tokens rotate)
  watching: 0, // generation of the status poll; a newer order stops the older poll
  // The order's idempotency key, kept until the shop gives a definite answer: pressing "Place
  // order" again after a lost answer (network, 5xx) replays the same order instead of placing
  // a second one.
  requestId: null,
};

const $ = (id) => document.getElementById(id);

// --- errors ----------------------------------------------------------------------------------
class ShopError extends Error {
  constructor(title, detail, violations = [], status = 0) {
    super(`${title}: ${detail}`);
    this.title = title;
    this.detail = detail;
    this.violations = violations; // ["field: description", ...]
    this.status = status; // the HTTP status; 0 when no answer came
  }

  // No answer, or the server failed: the request may or may not have been done.
  get unsure() {
    return this.status === 0 || this.status >= 500;
  }
}

async function problemOf(response, what) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's HTML page, say): the status line is all there is
  }
  if (body && (body.title || body.detail)) {
    const violations = [];
    for (const detail of body.details || []) {
      for (const v of detail.fieldViolations || []) violations.push(`${v.field}: ${v.description}`);
      for (const v of detail.violations || []) {
        violations.push(v.subject ? `${v.subject}: ${v.description}` : v.description);
      }
    }
    return new ShopError(
      body.title || `HTTP ${response.status}`,
      body.detail || '',
      violations,
      response.status,
    );
  }
  if (body && body.error) {
    // RFC 6749 §5.2, from identity's /token and /revoke
    const description = body.error_description ? `: ${body.error_description}` : '';
    return new ShopError(what, `${body.error}${description}`, [], response.status);
  }
  const line = `HTTP ${response.status} ${response.statusText}`.trim();
  return new ShopError(what, line, [], response.status);
}

function showError(error) {
  const box = $('error');
  box.replaceChildren();
  const title = document.createElement('strong');
  const detail = document.createElement('span');
  if (error instanceof ShopError) {
    title.textContent = error.title;
    detail.textContent = error.detail ? `: ${error.detail}` : '';
  } else {
    title.textContent = 'Something went wrong';
    detail.textContent = `: ${error && error.message ? error.message : String(error)}`;
    console.error(error);
  }
  box.append(title, detail);
  if (error instanceof ShopError && error.violations.length) {
    const list = document.createElement('ul');
    for (const text of error.violations) {
      const item = document.createElement('li');
      item.textContent = text;
      list.append(item);
    }
    box.append(list);
  }
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').replaceChildren();
}

// Runs a handler of a person's action: its failure is shown, never thrown away.
function action(handler) {
  return async (event) => {
    if (event) event.preventDefault();
    clearError();
    try {
      await handler(event);
    } catch (error) {
      showError(error);
    }
  };
}

// --- storage ---------------------------------------------------------------------------------
function load(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || 'null');
  } catch {
    return null;
  }
}

function save(key, value) {
  if (value === null) sessionStorage.removeItem(key);
  else sessionStorage.setItem(key, JSON.stringify(value));
}

// --- OAuth 2: authorization code + PKCE --------------------------------------------------------
function base64url(bytes) {
  let text = '';
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(size) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

function redirectUri() {
  return `${location.origin}/`;
}

async function startLogin() {
  const verifier = randomString(32); // 43 characters, RFC 7636 §4.1
  const challenge = base64url(
    await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)),
  );
  const state = randomString(16);
  save(KEYS.pkce, { verifier, state });
  const url = new URL(`${app.config.issuer}/authorize`);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: app.config.client_id,
    redirect_uri: redirectUri(),
    scope: 'orders offline_access',
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();
  location.assign(url.toString());
}

// The way back from identity: ?code=&state=&iss= (or ?error=...). Returns whether it was one.
async function finishLogin() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return false;
  const pending = load(KEYS.pkce);
  save(KEYS.pkce, null); // one answer per login: a replayed URL finds nothing to match
  // The code must not stay in the address bar, the history or a bookmark.
  history.replaceState(null, '', location.pathname);
  if (!pending || params.get('state') !== pending.state) {
    throw new ShopError(
      'Sign-in refused',
      'the answer does not belong to a login started in this tab (state mismatch); log in again',
    );
  }
  if (params.get('iss') !== app.config.issuer) {
    throw new ShopError(
      'Sign-in refused',
      `the answer comes from ${params.get('iss') || 'an unnamed issuer'}, not ${app.config.issuer}`,
    );
  }
  if (params.has('error')) {
    const description = params.get('error_description');
    const why = description ? `: ${description}` : '';
    throw new ShopError('Sign-in failed', `${params.get('error')}${why}`);
  }
  await tokenRequest(
    {
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: redirectUri(),
      client_id: app.config.client_id,
      code_verifier: pending.verifier,
    },
    'Sign-in failed',
  );
  return true;
}

async function tokenRequest(form, what) {
  let response;
  try {
    response = await fetch(`${app.config.issuer}/token`, {
      method: 'POST',
      body: new URLSearchParams(form), // form-encoded: a CORS "simple" request, no preflight
      headers: { Accept: 'application/json' },
      cache: 'no-store',
    });
  } catch (error) {
    const where = `identity at ${app.config.issuer}`;
    throw new ShopError(what, `${where} cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await problemOf(response, what);
  const answer = await response.json();
  setTokens({
    access_token: answer.access_token,
    // A refresh answer may omit it (RFC 6749 §6): the old one then stays valid.
    refresh_token: answer.refresh_token || (app.tokens && app.tokens.refresh_token) || '',
    expires_at: Date.now() + Number(answer.expires_in || 0) * 1000,
    sub: claimsOf(answer.access_token).sub || '',
    roles: claimsOf(answer.access_token).roles || [],
  });
}

// For display only: the token's signature is the gateway's business, not the page's, and what
// a caller may do is the services' (a hidden button grants and refuses nothing).
function claimsOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)) || {};
  } catch {
    return {};
  }
}

function setTokens(tokens) {
  app.tokens = tokens;
  save(KEYS.tokens, tokens);
  renderSession();
}

function refreshTokens() {
  if (!app.refreshing) {
    const refreshToken = app.tokens && app.tokens.refresh_token;
    app.refreshing = (async () => {
      if (!refreshToken) return false;
      try {
        await tokenRequest(
          {
            grant_type: 'refresh_token',
            refresh_token: refreshToken,
            client_id: app.config.client_id,
          },
          'Session expired',
        );
        return true;
      } catch {
        setTokens(null);
        return false;
      }
    })().finally(() => {
      app.refreshing = null;
    });
  }
  return app.refreshing;
}

async function logout() {
  const tokens = app.tokens;
  setTokens(null);
  save(KEYS.consistency, null);
  $('orders').replaceChildren();
  $('search-results').replaceChildren();
  if (tokens && tokens.refresh_token) {
    // RFC 7009: the refresh token dies with the sign-out. Best effort: the page forgets it anyway.
    try {
      await fetch(`${app.config.issuer}/revoke`, {
        method: 'POST',
        body: new URLSearchParams({
          token: tokens.refresh_token,
          token_type_hint: 'refresh_token',
          client_id: app.config.client_id,
        }),
      });
    } catch {
      // identity unreachable: nothing more a page can do
    }
  }
}

// --- the gateway's API -------------------------------------------------------------------------
async function api(method, path, { body, auth = true, retried = false } = {}) {
  const what = `${method} ${path.split('?')[0]}`;
  if (auth) {
    if (!app.tokens) throw new ShopError('Not signed in', 'log in first');
    if (!retried && app.tokens.expires_at - EXPIRY_MARGIN_MS < Date.now()) await refreshTokens();
    if (!app.tokens) throw new ShopError('Signed out', 'the session ended; log in again');
  }
  const headers = { Accept: 'application/json' };
  if (auth) headers.Authorization = `Bearer ${app.tokens.access_token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new ShopError('The shop cannot be reached', `${what}: ${error.message}`);
  }
  // A 401 never reached a backend, so the call is safe to repeat once with a fresh token.
  if (response.status === 401 && auth && !retried && (await refreshTokens())) {
    return api(method, path, { body, auth, retried: true });
  }
  if (!response.ok) throw await problemOf(response, what);
  return { data: await response.json(), traceId: response.headers.get('X-Trace-Id') || '' };
}

// --- money and orders ------------------------------------------------------------------------
function money(price, currencyCode) {
  const match = /^(\d{1,12})(?:\.(\d{1,9}))?$/.exec(price.trim());
  if (!match) {
    throw new ShopError('Check the order', 'the price must look like 12 or 12.30', [
      'price: a number with at most 9 decimals',
    ]);
  }
  return { currencyCode, units: match[1], nanos: Number((match[2] || '').padEnd(9, '0')) };
}

function formatMoney(amount) {
  if (!amount) return '';
  const value = Number(amount.units || 0) + Number(amount.nanos || 0) / 1e9;
  try {
    const format = { style: 'currency', currency: amount.currencyCode };
    return new Intl.NumberFormat('en', format).format(value);
  } catch {
    return `${value.toFixed(2)} ${amount.currencyCode || ''}`.trim();
  }
}

function statusWord(status) {
  return STATUS_WORDS[status] || status || 'UNKNOWN';
}

// A link into Jaeger's UI when one is configured (GATEWAY_JAEGER_URL: compose's Jaeger has it);
// else '' and the page shows the command that opens the trace (mesh trace ID --open).
function traceUrl(traceId) {
  const base = (app.config.jaeger_url || '').replace(/\/+$/, '');
  return base ? `${base}/trace/${traceId}` : '';
}

function traceCommand(traceId) {
  return `mesh trace ${traceId} --open`;
}

function rememberTrace(orderId, traceId) {
  if (!traceId) return;
  const traces = load(KEYS.traces) || {};
  traces[orderId] = traceId;
  save(KEYS.traces, traces);
}

function traceOf(orderId) {
  return (load(KEYS.traces) || {})[orderId] || '';
}

async function checkStock() {
  const sku = $('stock-sku').value.trim();
  $('stock').textContent = '…';
  try {
    const { data } = await api('GET', `/v1/stock/${encodeURIComponent(sku)}`, { auth: false });
    // protojson omits zero: no "available" means none.
    $('stock').textContent = `${data.sku || sku}: ${Number(data.available || 0)} available`;
  } catch (error) {
    $('stock').textContent = '';
    throw error;
  }
}

async function placeOrder() {
  const field = (id) => $(id).value.trim();
  const order = {
    requestId: app.requestId || (app.requestId = crypto.randomUUID()),
    paymentToken: field('payment-token'),
    lines: [
      {
        sku: field('sku'),
        quantity: Number(field('quantity')),
        unitPrice: money(field('price'), field('currency')),
      },
    ],
    shippingAddress: {
      name: field('name'),
      line1: field('line1'),
      city: field('city'),
      postalCode: field('postal-code'),
      countryCode: field('country'),
    },
  };
  const place = $('place');
  place.disabled = true; // a double click must not send two orders
  try {
    let answer;
    try {
      answer = await api('POST', '/v1/orders', { body: order });
      app.requestId = null;
    } catch (error) {
      if (!(error instanceof ShopError && error.unsure)) app.requestId = null;
      throw error;
    }
    const { data, traceId } = answer;
    rememberTrace(data.orderId, traceId);
    save(KEYS.consistency, data.consistencyToken || null);
    showTraceLink(traceId);
    renderStatus({ orderId: data.orderId, status: data.status });
    watch(data.orderId).catch(showError);
  } finally {
    place.disabled = !app.tokens;
  }
}

function showTraceLink(traceId) {
  const link = $('trace-link');
  link.hidden = !traceId;
  if (traceId) {
    const url = traceUrl(traceId);
    link.dataset.traceId = traceId;
    if (url) {
      link.href = url;
      link.textContent = `trace ${traceId}`;
    } else {
      link.removeAttribute('href');
      link.textContent = `trace: ${traceCommand(traceId)}`;
    }
  } else {
    link.removeAttribute('href');
  }
}

function renderStatus(order) {
  const word = statusWord(order.status);
  let text = `Order ${order.orderId}: ${word}`;
  if (word === 'PENDING') text += ' (reserving stock, taking payment, booking shipping)…';
  if (word === 'CANCELLED') text += `: ${order.cancellationReason || 'no reason given'}`;
  const status = $('status');
  status.textContent = text;
  status.dataset.status = word;
  status.dataset.orderId = order.orderId;
}

// Polls the order until it leaves PENDING, backing off; gives up (saying so) after two minutes.
async function watch(orderId) {
  const generation = ++app.watching;
  const deadline = Date.now() + POLL_GIVE_UP_MS;
  let delay = POLL_FIRST_MS;
  for (;;) {
    const { data } = await api('GET', `/v1/orders/${encodeURIComponent(orderId)}`);
    if (generation !== app.watching) return; // a newer order owns the status line
    const order = data.order || { orderId };
    renderStatus(order);
    if (statusWord(order.status) !== 'PENDING') {
      // Read the lists at the order's final version, so they agree with the status line
      // (order_views documents its consistency tokens as "<order_id>@<version>").
      if (order.version) save(KEYS.consistency, `${orderId}@${order.version}`);
      await listOrders();
      return;
    }
    if (Date.now() > deadline) {
      $('status').textContent =
        `Order ${orderId}: still PENDING after two minutes; see My orders later`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, POLL_MAX_MS);
  }
}

function consistencyQuery() {
  const token = load(KEYS.consistency);
  return token ? `consistencyToken=${encodeURIComponent(token)}` : '';
}

function renderOrders(list, orders) {
  list.replaceChildren();
  if (!orders.length) {
    const empty = document.createElement('li');
    empty.className = 'empty';
    empty.textContent = 'No orders.';
    list.append(empty);
    return;
  }
  for (const order of orders) {
    const item = document.createElement('li');
    item.dataset.orderId = order.orderId;
    item.dataset.status = statusWord(order.status);
    const id = document.createElement('code');
    id.textContent = order.orderId;
    const status = document.createElement('span');
    status.className = `status ${statusWord(order.status).toLowerCase()}`;
    status.textContent = statusWord(order.status);
    const total = document.createElement('span');
    total.className = 'total';
    total.textContent = formatMoney(order.total);
    item.append(id, ' ', status, ' ', total);
    if (order.cancellationReason) {
      const reason = document.createElement('span');
      reason.className = 'reason';
      reason.textContent = order.cancellationReason;
      item.append(' ', reason);
    }
    const traceId = traceOf(order.orderId);
    if (traceId) {
      const url = traceUrl(traceId);
      const link = document.createElement(url ? 'a' : 'span');
      link.className = 'trace';
      link.dataset.traceId = traceId;
      link.textContent = 'trace';
      if (url) {
        link.href = url;
        link.target = '_blank';
        link.rel = 'noopener noreferrer';
      } else {
        link.title = traceCommand(traceId);
      }
      item.append(' ', link);
    }
    list.append(item);
  }
}

async function listOrders() {
  const query = ['pageSize=20', consistencyQuery()].filter(Boolean).join('&');
  const { data } = await api('GET', `/v1/orders?${query}`);
  renderOrders($('orders'), data.orders || []);
}

async function searchOrders() {
  const words = $('search').value.trim();
  if (!words) throw new ShopError('Nothing to search', 'type a word: an order id, a SKU, a name');
  const query = [`q=${encodeURIComponent(words)}`, 'pageSize=20', consistencyQuery()]
    .filter(Boolean)
    .join('&');
  const { data } = await api('GET', `/v1/orders:search?${query}`);
  renderOrders($('search-results'), data.orders || []);
}

// --- the checkout experiment -----------------------------------------------------------------
async function showCheckoutVariant() {
  let variant = 'control';
  try {
    const path = `/v1/experiments/${CHECKOUT_EXPERIMENT}/assignment`;
    const { data } = await api('GET', path);
    if (data.inExperiment && Object.hasOwn(CHECKOUT_LABELS, data.variant)) variant = data.variant;
  } catch {
    // No variant (the gateway, the control plane or the session failed): today's button.
  }
  const place = $('place');
  place.textContent = CHECKOUT_LABELS[variant];
  place.dataset.experiment = CHECKOUT_EXPERIMENT;
  place.dataset.variant = variant;
}

// --- page ------------------------------------------------------------------------------------
function renderSession() {
  const signedIn = Boolean(app.tokens);
  $('who').textContent = signedIn
    ? `Signed in${app.tokens.sub ? ` (user ${app.tokens.sub})` : ''}.`
    : 'Not signed in.';
  document.body.dataset.signedIn = String(signedIn);
  $('login').hidden = signedIn;
  $('logout').hidden = !signedIn;
  for (const id of ['place', 'refresh-orders', 'search-button']) $(id).disabled = !signedIn;
  // Searching every customer's orders is staff's (order_views' policy): a customer's page
  // does not offer it.
  const roles = (app.tokens && app.tokens.roles) || [];
  $('search-section').hidden = !roles.some((role) => role === 'support' || role === 'admin');
}

// A second policy can only take permissions away: connect-src shrinks from "any http(s)" to
// this origin and the issuer's, now that the issuer is known.
function narrowPolicy(issuer) {
  const meta = document.createElement('meta');
  meta.httpEquiv = 'Content-Security-Policy';
  meta.content = `connect-src 'self' ${new URL(issuer).origin}`;
  document.head.append(meta);
}

async function loadConfig() {
  const response = await fetch('/config.json', { cache: 'no-store' });
  if (!response.ok) throw await problemOf(response, 'The page has no configuration');
  const config = await response.json();
  config.issuer = config.issuer.replace(/\/+$/, '');
  return config;
}

async function main() {
  $('login').addEventListener('click', action(startLogin));
  $('logout').addEventListener('click', action(logout));
  $('stock-form').addEventListener('submit', action(checkStock));
  $('order-form').addEventListener('submit', action(placeOrder));
  $('refresh-orders').addEventListener('click', action(listOrders));
  $('search-form').addEventListener('submit', action(searchOrders));
  try {
    app.config = await loadConfig();
    narrowPolicy(app.config.issuer);
    app.tokens = load(KEYS.tokens);
    renderSession();
    await finishLogin();
    if (app.tokens) {
      await showCheckoutVariant();
      await listOrders();
    }
  } catch (error) {
    renderSession();
    showError(error);
  } finally {
    document.body.dataset.ready = 'true'; // for tests: handlers are wired, the login is handled
  }
}

main();

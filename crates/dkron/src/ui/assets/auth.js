// Signing in to a server with ACLs on. The server says whether they are on the way Dkron's
// does (window.DKRON_ACL_ENABLED in the page); the token is kept in localStorage under
// "token", as Dkron's UI keeps it, and sent as a Bearer header. Any 401 or 403 signs out.

export const aclEnabled = window.DKRON_ACL_ENABLED === true;

export function authHeaders() {
  const token = localStorage.getItem("token");
  return aclEnabled && token ? { Authorization: `Bearer ${token}` } : {};
}

export function signedIn() {
  return !aclEnabled || Boolean(localStorage.getItem("token"));
}

export function signOut() {
  localStorage.removeItem("token");
  if (aclEnabled && location.hash !== "#/login") location.hash = "#/login";
}

// The login page: one token field, as in Dkron's UI; the token is checked against
// /v1/acl/token/self before it is kept.
export function loginPage(main, esc) {
  main.innerHTML = `<h1>Sign in</h1>
    <p class="muted">ACLs are on: sign in with an ACL token's secret (<code>dkron acl bootstrap</code> makes the first).</p>
    <form id="login"><label for="token">Token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" required>
      <button type="submit">Sign in</button><p id="login-msg" role="alert"></p></form>`;
  const form = document.getElementById("login");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = form.token.value.trim();
    const res = await fetch("/v1/acl/token/self", { headers: { Authorization: `Bearer ${token}` } });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      document.getElementById("login-msg").textContent = body.error || `${res.status} ${res.statusText}`;
      return;
    }
    localStorage.setItem("token", token);
    // Load the page again, signed in (the header names who).
    location.hash = "#/";
    location.reload();
  });
  document.getElementById("token").focus();
}

// "Signed in as <name> · Sign out" in the header.
export async function showWho(el, esc) {
  if (!aclEnabled || !signedIn()) return;
  const res = await fetch("/v1/acl/token/self", { headers: authHeaders() });
  if (!res.ok) return;
  const me = await res.json();
  el.insertAdjacentHTML("beforeend", ` · signed in as ${esc(me.name)} <a href="#/login" id="signout">Sign out</a>`);
  document.getElementById("signout").addEventListener("click", () => localStorage.removeItem("token"));
}

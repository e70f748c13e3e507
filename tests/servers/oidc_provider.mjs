// A real OpenID Connect provider for the tests: the `oidc-provider` package (npm), with the
// device authorization grant and its development login and consent pages. Accounts are the
// command line's: `node oidc_provider.mjs PORT alice=shop-devs,qa bob= carol=platform` makes
// alice (groups shop-devs and qa), bob (no groups) and carol; any password logs in.
// Client `dray` is public (no secret), as a CLI is; client `other` exists to make tokens that
// are not for Dray.
// The package is where tests/run.sh installs it (~/.cache/dray-tools/oidc), named by
// DRAY_OIDC_PROVIDER: an ES module is found by path, not by NODE_PATH.
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const { default: Provider } = await import(
  pathToFileURL(join(process.env.DRAY_OIDC_PROVIDER, 'lib', 'index.js')).href
);

const [port, ...specs] = process.argv.slice(2);
const accounts = Object.fromEntries(specs.map((spec) => {
  const [name, groups = ''] = spec.split('=');
  return [name, groups ? groups.split(',') : []];
}));

const deviceClient = (id) => ({
  client_id: id,
  token_endpoint_auth_method: 'none',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
  response_types: [],
  redirect_uris: [],
});

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [deviceClient('dray'), deviceClient('other')],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups', 'offline_access'],
  // Every claim the scopes ask for goes into the ID token, which is what Dray reads.
  conformIdTokenClaims: false,
  issueRefreshToken: async () => true,
  // OIDC_ID_TOKEN_TTL (seconds) makes ID tokens short-lived, for the tests of refreshing.
  ttl: { IdToken: Number(process.env.OIDC_ID_TOKEN_TTL || 3600), AccessToken: 3600, DeviceCode: 600 },
  async findAccount(ctx, id) {
    if (!(id in accounts)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test`, email_verified: true, groups: accounts[id] };
      },
    };
  },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc provider listening on ${port}`);
});

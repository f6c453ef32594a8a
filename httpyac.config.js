// httpyac's settings for endpoints.http (https://httpyac.github.io/guide/configuration.html).
//
// The requests are written as the VS Code REST Client writes them, so that one file serves
// both; two small hooks teach httpyac what REST Client's spelling means.

module.exports = {
  environments: {
    // The default address, the one `todo serve` listens on. Another one comes from an
    // environment (`-e NAME`, from http-client.env.json or http-client.private.env.json) or
    // from the command line (`--var baseUrl=http://host:port/api/v1`).
    $shared: { baseUrl: "http://127.0.0.1:8000/api/v1" },
  },
  configureHooks(api) {
    api.hooks.onResponse.addHook("restClientRequestVariables", (response, context) =>
      api.utils.setVariableInContext(requestVariable(response, context), context),
    );
    api.hooks.onResponse.addHook("expectedStatus", (response, context) =>
      checkStatus(response, context, api.utils.testFactoryAsync(context, { ignoreErrorFile: true })),
    );
  },
};

// `# @name created` makes the answer readable as {{created.response.body.$.id}} and
// {{created.response.headers.ETag}}, as in REST Client (httpyac itself says {{created.id}}).
function requestVariable(response, context) {
  const name = context.httpRegion.metaData.name;
  if (typeof name !== "string") {
    return {};
  }
  // Header names are case-insensitive; Node hands them over in lower case.
  const headers = new Proxy(response.headers, {
    get: (all, header) => all[String(header).toLowerCase()],
  });
  const body = { $: response.parsedBody ?? response.body };
  return { [name.trim()]: { response: { body, headers } } };
}

// `# @expect 201`: the status the request answers when the file is sent in order; any other
// fails the run (exit code 20), as httpyac's own `?? status == 201` would, but in a comment
// that REST Client passes over.
async function checkStatus(response, context, test) {
  const expected = context.httpRegion.metaData.expect;
  if (expected === undefined) {
    return;
  }
  await test(`status == ${expected}`, () => {
    if (response.statusCode !== Number(expected)) {
      throw new Error(`status is ${response.statusCode}, expected ${expected}`);
    }
  });
}

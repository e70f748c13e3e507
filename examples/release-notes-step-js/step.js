// A Dray promotion step written in JavaScript: `release-notes`.
//
// It writes the release note of the Freight being promoted (its alias, every image with tag and
// digest, every commit) as the step's output, for a later step to commit, post or attach. Built
// into a WebAssembly component with jco / componentize-js (see README.md) and run by Dray in the
// same sandbox as its built-in steps.

import { write } from 'dray:plugin/log@0.1.0';

const SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    title: { type: 'string', description: 'the note\'s first line' },
  },
};

export function describe() {
  return [
    {
      name: 'release-notes',
      description: 'The release note of the Freight being promoted',
      configSchema: JSON.stringify(SCHEMA),
      capabilities: [],
    },
  ];
}

function note(context, title) {
  const lines = [`# ${title}`, '', `Stage ${context.stage} of project ${context.project}`];
  for (const freight of context.freight) {
    lines.push('', `## Freight ${freight.alias ?? freight.name} (from ${freight.origin})`);
    for (const image of freight.images) {
      const digest = image.digest ? `@${image.digest}` : '';
      lines.push(`- image ${image.repoUrl}:${image.tag ?? ''}${digest}`);
    }
    for (const commit of freight.commits) {
      const message = commit.message ? `: ${commit.message}` : '';
      lines.push(`- commit ${commit.id.slice(0, 7)} of ${commit.repoUrl}${message}`);
    }
  }
  return lines.join('\n') + '\n';
}

export function run(kind, context, config) {
  if (kind !== 'release-notes') {
    // An `err` of the WIT result: the variant's tag and value.
    throw { tag: 'invalid-config', val: `unknown step kind ${kind}` };
  }
  const { title = 'Release' } = JSON.parse(config);
  const text = note(context, title);
  write('info', `release note of ${text.length} bytes`, []);
  return {
    status: 'succeeded',
    outputs: JSON.stringify({ note: text }),
    message: `release note of ${context.freight.length} Freight`,
    retryAfterSeconds: undefined,
  };
}

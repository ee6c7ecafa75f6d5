// Server-sent events read from a fetch() body (EventSource cannot POST or send a key): yields
// {data, comments} per event as the bytes arrive. data is the event's data lines joined by "\n"
// (null for an event of comments only, e.g. the server's ": guard holding" while text is held).
// Lines end with LF, CRLF or CR, as the SSE grammar allows.
export async function* readSSE(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // a CR at the very end may be the first half of a CRLF: keep it for the next read
      const keep = !done && buf.endsWith('\r') ? 1 : 0;
      const text = buf.slice(0, buf.length - keep).replace(/\r\n?/g, '\n');
      const parts = text.split('\n\n');
      buf = (done ? '' : parts.pop()) + buf.slice(buf.length - keep);
      for (const block of parts) if (block) yield parseBlock(block);
      if (done) return;
    }
  } finally {
    try { reader.releaseLock(); } catch { /* a read was cancelled */ }
  }
}

function parseBlock(block) {
  const data = [], comments = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) comments.push(line.slice(1).trim());
    else if (line === 'data' || line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  return { data: data.length ? data.join('\n') : null, comments };
}

// The two DOM helpers every page uses.
export const $ = (id) => document.getElementById(id);

// An element with properties and children (text or nodes; null and undefined are skipped).
// Text goes in as text, never as HTML.
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

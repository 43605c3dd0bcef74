// Copying text without anything browser-specific: the async Clipboard API where the page is a
// secure context (https, localhost), else the older execCommand('copy') through a scratch textarea.

/**
 * @param {string} text
 * @returns {Promise<boolean>} whether the text reached the clipboard
 */
export async function copyText(text) {
  if (!text) return false;
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // not allowed here (no focus, no permission): try the older way
  }
  return copyWithTextarea(text);
}

function copyWithTextarea(text) {
  const previous = document.activeElement;
  const scratch = document.createElement('textarea');
  scratch.value = text;
  scratch.setAttribute('readonly', '');
  scratch.style.cssText = 'position:fixed;top:-1000px;opacity:0';
  document.body.append(scratch);
  scratch.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  scratch.remove();
  previous?.focus?.();
  return copied;
}

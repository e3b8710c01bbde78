// Renders the card given in the URL's fragment (`render.html#<encodeURIComponent(card JSON)>`;
// either the card itself or a Teams message whose first attachment holds it) into #card, and
// writes a JSON verdict into #verdict:
//   {"errors": [...], "warnings": [...], "text": "<the rendered card's innerText>", "height": <px>}
// errors: a missing renderer, JSON that does not parse, and every event the renderer reports
// while parsing the card (unknown types or properties, bad values, an unsupported version);
// warnings: every event of the renderer's own validation (validateProperties()).
// Host config: the renderer's default host config with Teams' font (Segoe UI), interactivity on.
// No Markdown processor is installed, so text shows as written: an escape backslash shows.
(function () {
  const verdict = { errors: [], warnings: [], text: "" };
  try {
    if (typeof AdaptiveCards === "undefined") {
      throw new Error("the adaptivecards renderer did not load (run scripts/test-tools)");
    }
    let json = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    if (json && Array.isArray(json.attachments)) {
      json = json.attachments[0].content;
    }
    const card = new AdaptiveCards.AdaptiveCard();
    card.hostConfig = new AdaptiveCards.HostConfig({
      fontFamily: "Segoe UI, system-ui, sans-serif",
      supportsInteractivity: true,
    });
    const context = new AdaptiveCards.SerializationContext();
    card.parse(json, context);
    for (let i = 0; i < context.eventCount; i++) {
      const e = context.getEventAt(i);
      verdict.errors.push(AdaptiveCards.ValidationEvent[e.event] + ": " + e.message);
    }
    for (const e of card.validateProperties().validationEvents) {
      verdict.warnings.push(AdaptiveCards.ValidationEvent[e.event] + ": " + e.message);
    }
    const rendered = card.render();
    if (!rendered) {
      throw new Error("render() returned nothing");
    }
    document.getElementById("card").appendChild(rendered);
    verdict.text = rendered.innerText;
    verdict.height = Math.ceil(document.documentElement.scrollHeight);
  } catch (e) {
    verdict.errors.push(String(e && e.message ? e.message : e));
  }
  document.getElementById("verdict").textContent = JSON.stringify(verdict);
})();

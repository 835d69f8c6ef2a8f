"""Content negotiation shared by the routes (services.common.ogc) and the error handlers (services.common.errors)."""


def accepts_html(accept: str) -> bool:
    """text/html preferred over every JSON type (browsers); clients that name JSON or nothing get JSON."""
    best_html, best_json = 0.0, 0.0
    for part in accept.split(","):
        media, _, rest = part.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for attr in rest.split(";"):
            key, _, val = attr.strip().partition("=")
            if key == "q":
                try:
                    quality = float(val)
                except ValueError:
                    quality = 0.0
        if media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, quality)
        elif "json" in media or media in ("*/*", "application/*"):
            best_json = max(best_json, quality if "json" in media else quality - 0.001)
    return best_html > 0 and best_html >= best_json

"""The pages' texts in English and Swedish, and how a page's language is chosen.

A small dictionary catalogue rather than gettext/Babel: two languages, some sixty strings,
no plural forms beyond what the sentences avoid. Every key exists in both languages (a test
checks it); `{name}` placeholders are filled with `str.format` after Jinja2 has escaped the
values (the templates call `t(key, **values)`; see `Translator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from markupsafe import Markup, escape

LANGUAGES = ("en", "sv")
DEFAULT_LANGUAGE = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "language_name": "English",
        "switch_language": "Language",
        "footer": "This page uses no cookies and no JavaScript.",
        "messages_from": "Messages from {tenant}",
        # One-click unsubscribe: confirmation (GET) and result (POST).
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_topic_intro": "You are about to stop receiving {topic} from {tenant}.",
        "unsubscribe_all_intro": "You are about to stop receiving all marketing messages "
        "from {tenant}.",
        "unsubscribe_channels": "This applies to every channel: e-mail, SMS and push "
        "notifications.",
        "transactional_note": "Receipts, account notices and other messages you need for "
        "your account are still sent.",
        "unsubscribe_button": "Unsubscribe",
        "manage_instead": "Choose what you receive instead",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_topic": "You will no longer receive {topic} from {tenant}.",
        "unsubscribed_all": "You will no longer receive marketing messages from {tenant}.",
        "manage_preferences": "Manage your preferences",
        # The preference center.
        "preferences_title": "Your communication preferences",
        "preferences_intro": "Choose what {tenant} may send you.",
        "saved": "Your choices are saved.",
        "saved_consent": "Changes to your consents may take a moment to show here.",
        "topics_heading": "Messages",
        "marketing_topic": "Marketing",
        "transactional_topic": "Always sent",
        "always_on": "You need these messages for your account, so they cannot be turned off.",
        "all_unsubscribed": "You have unsubscribed from all marketing. Tick a topic to "
        "subscribe again.",
        "consent_needed": "Marketing messages need your consent to marketing e-mail (under "
        "“Your consents”).",
        "consents_heading": "Your consents",
        "consents_intro": "A ticked box means you have given your consent.",
        "consents_read_only": "Your consents cannot be changed on this page right now.",
        "consent_required_purpose": "Needed for the service to work; it cannot be withdrawn.",
        "save_button": "Save my choices",
        "unsubscribe_all_heading": "Stop all marketing",
        "unsubscribe_all_text": "Stops every marketing message on every channel. Receipts "
        "and account notices are still sent.",
        "unsubscribe_all_button": "Unsubscribe from all marketing",
        "error_consent_required": "To subscribe to {topics}, first give your consent to "
        "marketing e-mail under “Your consents”, then save.",
        "other_changes_saved": "Your other changes were saved.",
        "consent_pending": "We are recording your consent to marketing e-mail. Press “Save my "
        "choices” again in a moment to subscribe to {topics}.",
        "error_stale": "The page was out of date. It now shows your current choices; please "
        "make your change again.",
        "error_heading": "Something needs your attention",
        # Error pages.
        "invalid_title": "This link does not work",
        "invalid_text": "Check that you opened the whole link, or use the link in a more "
        "recent message.",
        "expired_title": "This link has expired",
        "expired_text": "For your security, links stop working after a while. Use the link "
        "in a more recent message.",
        "bad_request_title": "The request was not understood",
        "bad_request_text": "Use the button on the page you came from.",
        # Channels and well-known consent purposes.
        "channel_email": "E-mail",
        "channel_sms": "SMS",
        "channel_push": "Push notifications",
        "purpose_marketing-email": "Marketing e-mail",
        "purpose_required": "Strictly necessary",
        "purpose_performance": "Performance",
        "purpose_functionality": "Functionality",
        "purpose_targeting": "Targeting and advertising",
    },
    "sv": {
        "language_name": "Svenska",
        "switch_language": "Språk",
        "footer": "Den här sidan använder varken kakor eller JavaScript.",
        "messages_from": "Utskick från {tenant}",
        "unsubscribe_title": "Avsluta prenumeration",
        "unsubscribe_topic_intro": "Du håller på att avsluta utskicken {topic} från {tenant}.",
        "unsubscribe_all_intro": "Du håller på att avsluta alla marknadsföringsutskick från "
        "{tenant}.",
        "unsubscribe_channels": "Det gäller alla kanaler: e-post, sms och pushnotiser.",
        "transactional_note": "Kvitton, kontomeddelanden och andra meddelanden som du behöver "
        "för ditt konto skickas fortfarande.",
        "unsubscribe_button": "Avsluta prenumerationen",
        "manage_instead": "Välj i stället vad du vill få",
        "unsubscribed_title": "Du har avslutat prenumerationen",
        "unsubscribed_topic": "Du får inte längre {topic} från {tenant}.",
        "unsubscribed_all": "Du får inte längre marknadsföring från {tenant}.",
        "manage_preferences": "Hantera dina inställningar",
        "preferences_title": "Dina utskicksinställningar",
        "preferences_intro": "Välj vad {tenant} får skicka till dig.",
        "saved": "Dina val är sparade.",
        "saved_consent": "Det kan dröja en liten stund innan ändrade samtycken syns här.",
        "topics_heading": "Utskick",
        "marketing_topic": "Marknadsföring",
        "transactional_topic": "Skickas alltid",
        "always_on": "Du behöver de här meddelandena för ditt konto, så de går inte att stänga av.",
        "all_unsubscribed": "Du har avslutat all marknadsföring. Kryssa i ett utskick för "
        "att prenumerera igen.",
        "consent_needed": "Marknadsföring kräver ditt samtycke till marknadsföring via e-post "
        "(under ”Dina samtycken”).",
        "consents_heading": "Dina samtycken",
        "consents_intro": "En ikryssad ruta betyder att du har lämnat ditt samtycke.",
        "consents_read_only": "Dina samtycken kan inte ändras på den här sidan just nu.",
        "consent_required_purpose": "Behövs för att tjänsten ska fungera och kan inte återkallas.",
        "save_button": "Spara mina val",
        "unsubscribe_all_heading": "Stoppa all marknadsföring",
        "unsubscribe_all_text": "Stoppar alla marknadsföringsutskick i alla kanaler. Kvitton "
        "och kontomeddelanden skickas fortfarande.",
        "unsubscribe_all_button": "Avsluta all marknadsföring",
        "error_consent_required": "För att prenumerera på {topics} behöver du först samtycka "
        "till marknadsföring via e-post under ”Dina samtycken” och sedan spara.",
        "other_changes_saved": "Dina övriga ändringar har sparats.",
        "consent_pending": "Vi registrerar ditt samtycke till marknadsföring via e-post. Tryck "
        "på ”Spara mina val” igen om en liten stund för att prenumerera på {topics}.",
        "error_stale": "Sidan var inaktuell. Den visar nu dina aktuella val; gör din ändring igen.",
        "error_heading": "Något behöver din uppmärksamhet",
        "invalid_title": "Länken fungerar inte",
        "invalid_text": "Kontrollera att du öppnade hela länken, eller använd länken i ett "
        "senare utskick.",
        "expired_title": "Länken har slutat gälla",
        "expired_text": "Av säkerhetsskäl slutar länkar att fungera efter en tid. Använd "
        "länken i ett senare utskick.",
        "bad_request_title": "Begäran kunde inte tolkas",
        "bad_request_text": "Använd knappen på sidan du kom från.",
        "channel_email": "E-post",
        "channel_sms": "Sms",
        "channel_push": "Pushnotiser",
        "purpose_marketing-email": "Marknadsföring via e-post",
        "purpose_required": "Nödvändiga",
        "purpose_performance": "Prestanda",
        "purpose_functionality": "Funktionalitet",
        "purpose_targeting": "Riktad marknadsföring och annonser",
    },
}


@dataclass(frozen=True)
class Translator:
    """The texts of one language; `t(key, **values)` escapes the values, not the text."""

    language: str

    def __call__(self, key: str, **values: object) -> Markup:
        # Markup.format escapes each value; the catalogue text itself is escaped first.
        return escape(MESSAGES[self.language][key]).format(**values)

    def has(self, key: str) -> bool:
        """Whether the catalogue has `key` (optional texts, e.g. a purpose's name)."""
        return key in MESSAGES[self.language]


def _accept_language(header: str) -> str | None:
    """The supported language the `Accept-Language` header prefers most, or None."""
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        candidate = (quality, -position, primary)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[2]


def choose_language(query: str | None, token_locale: str | None, headers: Mapping[str, str]) -> str:
    """`?lang=`, else the link's locale, else `Accept-Language`, else English."""
    for choice in (query, token_locale):
        if choice is not None and choice in LANGUAGES:
            return choice
    return _accept_language(headers.get("accept-language", "")[:500]) or DEFAULT_LANGUAGE

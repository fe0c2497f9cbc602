"""UI text in Bahasa Indonesia and English: one message catalog, and the
choice of language for a request.

The language is, in order: the `lang` cookie the switch link sets (a choice
the user made), else the best of `Accept-Language` (RFC 9110 weights), else
English. Only the interface is translated; the API reference (`/docs`) is
written once, in English, like the API's own field names and errors.
"""

from __future__ import annotations

from string import Formatter
from typing import Final

LANGUAGES: Final = ("id", "en")
# A browser that accepts neither: English is the language more of them read.
FALLBACK: Final = "en"
LANGUAGE_NAMES: Final = {"id": "Bahasa Indonesia", "en": "English"}
# Old systems still send ISO 639's withdrawn code for Indonesian.
ALIASES: Final = {"in": "id"}
# Enough for any real browser; a longer header is not read past this many ranges.
MAX_RANGES: Final = 32

MESSAGES: Final[dict[str, dict[str, str]]] = {
    "id": {
        "site.tagline": "Satu API key, satu saldo Rupiah: model teks, gambar, dan video.",
        "nav.home": "Beranda",
        "nav.pricing": "Harga",
        "nav.docs": "Dokumentasi",
        "nav.label": "Navigasi utama",
        "lang.switch": "Bahasa",
        "home.title": "Satu API untuk teks, gambar, dan video",
        "home.lead": (
            "aiport memberi Anda satu API key dan satu saldo prabayar dalam Rupiah untuk "
            "model AI dari banyak penyedia. Endpoint teks kompatibel dengan SDK OpenAI; "
            "gambar dan video berjalan sebagai job yang Anda pantau sampai selesai."
        ),
        "home.point.rupiah": (
            "Bayar dalam Rupiah. Setiap panggilan dihargai dalam IDR dan dipotong dari saldo "
            "Anda, tanpa biaya bulanan."
        ),
        "home.point.hold": (
            "Biaya terburuk ditahan dulu, lalu yang terpakai saja yang ditagih. Jika penyedia "
            "gagal, seluruh dana yang ditahan kembali ke saldo Anda."
        ),
        "home.point.openai": (
            "Cukup ganti base URL dan key di SDK OpenAI Anda untuk memakai model teks kami."
        ),
        "home.try": "Coba dengan curl",
        "home.models": "Model yang tersedia sekarang",
        "home.models.count": "{count} model aktif",
        "home.see_pricing": "Lihat semua harga",
        "home.read_docs": "Baca dokumentasi API",
        "models.unavailable": (
            "Daftar model sedang tidak dapat dimuat. Silakan muat ulang halaman sebentar lagi."
        ),
        "col.model": "Model",
        "col.name": "Nama",
        "col.modality": "Jenis",
        "col.endpoint": "Endpoint",
        "modality.text": "Teks",
        "modality.image": "Gambar",
        "modality.img2img": "Edit gambar",
        "modality.video": "Video",
        "modality.img2video": "Gambar ke video",
        "modality.multimodal": "Video multimodal",
        "pricing.title": "Harga",
        "pricing.lead": (
            "Semua harga dalam Rupiah (IDR), sama persis dengan GET /v1/pricing. Tagihan "
            "dibulatkan ke atas ke mikro-rupiah terdekat."
        ),
        "pricing.text": "Model teks",
        "pricing.text.note": "Harga per 1 juta token.",
        "pricing.input": "Input",
        "pricing.cached": "Input dari cache",
        "pricing.cache_write": "Tulis ke cache",
        "pricing.output": "Output",
        "pricing.max_output": "Output maks. (token)",
        "pricing.reasoning": "Penalaran",
        "pricing.yes": "Ya",
        "pricing.no": "Tidak",
        "pricing.images": "Model gambar",
        "pricing.images.note": "Harga per gambar, menurut resolusi.",
        "pricing.resolution": "Resolusi",
        "pricing.per_image": "Per gambar",
        "pricing.videos": "Model video",
        "pricing.videos.note": "Harga per detik video yang dihasilkan, menurut resolusi.",
        "pricing.per_second": "Per detik",
        "pricing.per_second_ref": "Per detik, dengan referensi",
        "pricing.min_seconds_ref": "Minimal {seconds} detik ditagih bila memakai referensi.",
        "pricing.any_resolution": "semua",
        "docs.title": "Dokumentasi API",
        "docs.english_only": "Referensi API ditulis dalam bahasa Inggris.",
        "docs.markdown": "Unduh sebagai satu file Markdown (untuk asisten coding Anda)",
        "error.404.title": "Halaman tidak ditemukan",
        "error.404.body": "Halaman yang Anda cari tidak ada. Mungkin alamatnya salah ketik.",
        "error.403.title": "Permintaan ditolak",
        "error.403.body": (
            "Formulir ini kedaluwarsa atau tidak berasal dari situs ini. Muat ulang halaman "
            "dan coba lagi."
        ),
        "error.405.title": "Metode tidak diizinkan",
        "error.405.body": "Halaman ini tidak menerima permintaan seperti itu.",
        "error.500.title": "Terjadi kesalahan",
        "error.500.body": "Ada yang salah di pihak kami. Silakan coba lagi sebentar lagi.",
        "error.503.title": "Sedang tidak tersedia",
        "error.503.body": "Bagian aiport ini sedang tidak tersedia. Silakan coba lagi sebentar.",
        "error.home": "Kembali ke beranda",
        "footer.currency": "Semua harga dalam Rupiah (IDR).",
        "footer.api": "API: {base}/v1",
    },
    "en": {
        "site.tagline": "One API key, one Rupiah balance: text, image and video models.",
        "nav.home": "Home",
        "nav.pricing": "Pricing",
        "nav.docs": "Docs",
        "nav.label": "Main navigation",
        "lang.switch": "Language",
        "home.title": "One API for text, image and video",
        "home.lead": (
            "aiport gives you one API key and one prepaid balance in Rupiah for AI models "
            "from many providers. The text endpoint works with the OpenAI SDK; images and "
            "video run as jobs that you poll until they are done."
        ),
        "home.point.rupiah": (
            "Pay in Rupiah. Every call is priced in IDR and taken from your balance, with no "
            "monthly fee."
        ),
        "home.point.hold": (
            "The worst-case cost is held first, then only what was used is charged. If a "
            "provider fails, everything held goes back to your balance."
        ),
        "home.point.openai": (
            "Change only the base URL and the key in your OpenAI SDK to use our text models."
        ),
        "home.try": "Try it with curl",
        "home.models": "Models available now",
        "home.models.count": "{count} live models",
        "home.see_pricing": "See every price",
        "home.read_docs": "Read the API docs",
        "models.unavailable": "The model list cannot be loaded right now. Please reload shortly.",
        "col.model": "Model",
        "col.name": "Name",
        "col.modality": "Kind",
        "col.endpoint": "Endpoint",
        "modality.text": "Text",
        "modality.image": "Image",
        "modality.img2img": "Image editing",
        "modality.video": "Video",
        "modality.img2video": "Image to video",
        "modality.multimodal": "Multimodal video",
        "pricing.title": "Pricing",
        "pricing.lead": (
            "Every price is in Indonesian Rupiah (IDR), exactly as GET /v1/pricing lists it. "
            "Charges round up to the next micro-rupiah."
        ),
        "pricing.text": "Text models",
        "pricing.text.note": "Prices per 1 million tokens.",
        "pricing.input": "Input",
        "pricing.cached": "Cached input",
        "pricing.cache_write": "Cache write",
        "pricing.output": "Output",
        "pricing.max_output": "Max output (tokens)",
        "pricing.reasoning": "Reasoning",
        "pricing.yes": "Yes",
        "pricing.no": "No",
        "pricing.images": "Image models",
        "pricing.images.note": "Price per image, by resolution.",
        "pricing.resolution": "Resolution",
        "pricing.per_image": "Per image",
        "pricing.videos": "Video models",
        "pricing.videos.note": "Price per generated second of video, by resolution.",
        "pricing.per_second": "Per second",
        "pricing.per_second_ref": "Per second, with references",
        "pricing.min_seconds_ref": "At least {seconds} seconds are billed when using references.",
        "pricing.any_resolution": "any",
        "docs.title": "API documentation",
        "docs.english_only": "The API reference is written in English.",
        "docs.markdown": "Download as one Markdown file (for your coding assistant)",
        "error.404.title": "Page not found",
        "error.404.body": "The page you are looking for does not exist. Check the address.",
        "error.403.title": "Request refused",
        "error.403.body": (
            "This form has expired or did not come from this site. Reload the page and try again."
        ),
        "error.405.title": "Method not allowed",
        "error.405.body": "This page does not take that kind of request.",
        "error.500.title": "Something went wrong",
        "error.500.body": "Something went wrong on our side. Please try again shortly.",
        "error.503.title": "Temporarily unavailable",
        "error.503.body": "This part of aiport is unavailable right now. Please try again shortly.",
        "error.home": "Back to the home page",
        "footer.currency": "All prices in Indonesian Rupiah (IDR).",
        "footer.api": "API: {base}/v1",
    },
}


def translate(lang: str, key: str, **values: object) -> str:
    """The message `key` in `lang` (English if `lang` is not ours), with {values}.
    An unknown key raises: a typo must fail a test, not show a key to a user."""
    table = MESSAGES.get(lang, MESSAGES[FALLBACK])
    text = table[key]
    return text.format(**values) if values else text


def format_count(value: int, lang: str) -> str:
    """A whole number grouped as the language writes it: 65.536 (id), 65,536 (en)."""
    grouped = f"{value:,}"
    return grouped.replace(",", ".") if lang == "id" else grouped


def placeholders(text: str) -> frozenset[str]:
    """The {names} a message uses (both languages must use the same ones)."""
    return frozenset(name for _, name, _, _ in Formatter().parse(text) if name)


def accepted_languages(header: str | None) -> list[str]:
    """Our languages in the order `Accept-Language` prefers them (highest weight
    first, then header order); q=0 excludes one, `*` stands for any other."""
    if not header:
        return []
    ranked: list[tuple[float, int, str]] = []
    excluded: set[str] = set()
    named: set[str] = set()
    wildcard: tuple[float, int] | None = None
    for position, item in enumerate(header.split(",")[:MAX_RANGES]):
        tag, _, params = item.strip().partition(";")
        weight = _weight(params)
        if weight is None:
            continue  # malformed: ignored, as RFC 9110 lets a recipient do
        primary = tag.strip().lower().split("-", 1)[0]
        primary = ALIASES.get(primary, primary)
        if primary == "*":
            wildcard = (weight, position)
        elif primary in LANGUAGES:
            named.add(primary)
            if weight == 0:
                excluded.add(primary)
            else:
                ranked.append((weight, position, primary))
    if wildcard is not None and wildcard[0] > 0:
        # `*` weighs only the languages the header does not name itself.
        ranked += [(wildcard[0], wildcard[1], lang) for lang in LANGUAGES if lang not in named]
    ranked.sort(key=lambda entry: (-entry[0], entry[1]))
    chosen: list[str] = []
    for _, _, lang in ranked:
        if lang not in chosen and lang not in excluded:
            chosen.append(lang)
    return chosen


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The language of a response: the user's switch, else their browser's, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    preferred = accepted_languages(accept_language)
    return preferred[0] if preferred else FALLBACK


def _weight(params: str) -> float | None:
    """The q of `;q=0.8` (1 without one); None when it is not a valid weight."""
    weight = 1.0
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            weight = float(value.strip())
        except ValueError:
            return None
        if not 0.0 <= weight <= 1.0:
            return None
    return weight

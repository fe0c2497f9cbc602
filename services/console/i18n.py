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
        "nav.dashboard": "Dasbor",
        "nav.api_keys": "API key",
        "nav.jobs": "Job",
        "jobs.title": "Job gambar dan video",
        "jobs.status": "Status",
        "jobs.any_status": "Semua status",
        "jobs.apply": "Terapkan",
        "jobs.held": "Ditahan",
        "jobs.charged": "Ditagih",
        "jobs.refund": "Dikembalikan",
        "jobs.result": "Hasil",
        "jobs.open_result": "Buka",
        "jobs.none": "Belum ada job untuk filter ini.",
        "jobs.next": "Halaman berikutnya",
        "jobs.status.pending": "Menunggu",
        "jobs.status.processing": "Diproses",
        "jobs.status.done": "Selesai",
        "jobs.status.failed": "Gagal",
        "nav.billing": "Tagihan",
        "billing.title": "Tagihan dan saldo",
        "billing.statement": "Mutasi saldo",
        "billing.in_flight": "Dana yang sedang ditahan",
        "billing.in_flight_note": (
            "Ditahan untuk panggilan dan job yang masih berjalan; sisanya kembali ke saldo "
            "saat selesai."
        ),
        "billing.none_in_flight": "Tidak ada dana yang sedang ditahan.",
        "billing.kind": "Jenis",
        "billing.amount": "Jumlah",
        "billing.balance_after": "Saldo setelahnya",
        "billing.description": "Keterangan",
        "billing.none": "Belum ada mutasi.",
        "billing.next": "Halaman berikutnya",
        "billing.refunds_note": (
            "Panggilan yang gagal tidak ditagih: dana yang ditahan kembali utuh (lihat "
            "Pemakaian, status Dikembalikan)."
        ),
        "billing.topup": "Isi saldo",
        "billing.refunds": "Pengembalian terbaru",
        "billing.no_refunds": "Belum ada panggilan yang gagal dan dikembalikan.",
        "billing.kind.topup": "Isi saldo",
        "billing.kind.charge": "Tagihan",
        "billing.kind.promotion": "Promosi",
        "billing.kind.adjustment": "Penyesuaian",
        "billing.kind.reversal": "Isi saldo ditarik kembali",
        "billing.topups": "Isi saldo terbaru",
        "billing.topups_all": "Semua isi saldo",
        "billing.debt_title": "Akun Anda berutang {debt}",
        "billing.debt_body": (
            "Isi saldo yang sudah Anda pakai dikembalikan (refund) atau dibatalkan bank "
            "(chargeback). Semua API key akun ini ditangguhkan sampai utang ini lunas; isi saldo "
            "melunasinya lebih dulu."
        ),
        "billing.debt_pay": "Lunasi dengan isi saldo",
        "billing.alert": "Peringatan saldo rendah",
        "billing.alert_note": (
            "Kami mengirim email ke semua pengguna akun ini saat saldo tersedia turun di bawah "
            "batas ini."
        ),
        "billing.alert_current": "Batas saat ini: {threshold}.",
        "billing.alert_off": "Peringatan tidak aktif.",
        "billing.alert_label": "Batas (Rp)",
        "billing.alert_save": "Simpan batas",
        "billing.alert_clear": "Matikan peringatan",
        "billing.alert_saved": "Peringatan saldo rendah disimpan.",
        "billing.alert_invalid": "Tulis batas dalam rupiah utuh di atas 0, mis. 20000.",
        "topup.title": "Isi saldo",
        "topup.lead": (
            "Bayar dalam Rupiah dengan QRIS, virtual account bank, atau e-wallet. Saldo bertambah "
            "begitu pembayaran dikonfirmasi; tanpa biaya bulanan dan tanpa masa berlaku."
        ),
        "topup.choose": "Pilih jumlah",
        "topup.other_amount": "Atau tulis jumlah lain (Rp)",
        "topup.limits": "Minimal {minimum}, maksimal {maximum}.",
        "topup.limit_min": "Minimal {minimum}.",
        "topup.review_submit": "Lanjut: lihat biaya",
        "topup.unavailable": ("Isi saldo sedang tidak tersedia. Silakan coba lagi sebentar lagi."),
        "topup.amount_invalid": "Tulis jumlah dalam rupiah utuh, mis. 100000 atau 100.000.",
        "topup.amount_too_small": "Jumlah minimal {minimum}.",
        "topup.amount_refused": "Jumlah ini tidak dapat diisi. Periksa batas di bawah.",
        "topup.gateway_refused": (
            "Layanan pembayaran ini sedang tidak dapat dipakai. Pilih yang lain atau coba lagi."
        ),
        "topup.review_title": "Periksa sebelum membayar",
        "topup.review_note": (
            "Anda akan diarahkan ke halaman pembayaran layanan yang Anda pilih, lalu kembali ke "
            "sini. Saldo bertambah sebesar jumlah isi saldo; biaya layanan dibayar terpisah."
        ),
        "topup.amount": "Jumlah isi saldo",
        "topup.fee": "Biaya",
        "topup.total": "Total dibayar",
        "topup.gateway": "Layanan pembayaran",
        "topup.pay_with": "Bayar dengan {gateway}",
        "topup.change_amount": "Ubah jumlah",
        "topup.history": "Riwayat isi saldo",
        "topup.none": "Belum ada isi saldo.",
        "topup.next": "Halaman berikutnya",
        "topup.created": "Dibuat",
        "topup.status": "Status",
        "topup.method": "Metode",
        "topup.paid_at": "Dibayar",
        "topup.expires_at": "Bayar sebelum",
        "topup.reversed": "Ditarik kembali",
        "topup.open": "Lihat",
        "topup.receipt": "Kwitansi",
        "topup.order_title": "Isi saldo {id}",
        "topup.continue": "Lanjutkan pembayaran",
        "topup.waiting": (
            "Menunggu konfirmasi pembayaran. Halaman ini diperbarui sendiri; Anda boleh "
            "menutupnya, saldo tetap bertambah setelah pembayaran diterima."
        ),
        "topup.paid_note": "Pembayaran diterima dan saldo Anda sudah bertambah.",
        "topup.ended_note": "Pesanan ini tidak dibayar. Tidak ada dana yang berpindah.",
        "topup.reversed_note": (
            "Pembayaran ini dikembalikan (refund) atau dibatalkan bank (chargeback); jumlahnya "
            "ditarik kembali dari saldo."
        ),
        "topup.new": "Isi saldo lagi",
        "topup.debt_note": "Isi saldo berikutnya melunasi utang {debt} lebih dulu.",
        "topup.forwarding_title": "Menuju halaman pembayaran",
        "topup.forwarding_body": (
            "Halaman pembayaran {gateway} akan terbuka. Jika tidak, tekan tombol di bawah."
        ),
        "topup.status.awaiting_payment": "Menunggu pembayaran",
        "topup.status.pending": "Diproses",
        "topup.status.paid": "Dibayar",
        "topup.status.expired": "Kedaluwarsa",
        "topup.status.cancelled": "Dibatalkan",
        "topup.status.failed": "Gagal",
        "topup.status.refunded": "Dikembalikan",
        "topup.status.charged_back": "Dibatalkan bank",
        "receipt.title": "Kwitansi",
        "receipt.number": "Nomor",
        "receipt.date": "Tanggal",
        "receipt.received_from": "Telah terima dari",
        "receipt.amount": "Uang sejumlah",
        "receipt.in_words": "Terbilang",
        "receipt.for": "Untuk pembayaran",
        "receipt.purpose": "Isi saldo aiport",
        "receipt.payment": "Dibayar melalui",
        "receipt.description": "Keterangan",
        "receipt.dpp": "Dasar pengenaan pajak (DPP)",
        "receipt.ppn": "PPN {rate}%",
        "receipt.ppn_included": "Total sudah termasuk PPN.",
        "receipt.total": "Total",
        "receipt.tax_id": "NPWP",
        "receipt.received_by": "Yang menerima,",
        "receipt.electronic": "Kwitansi ini dibuat secara elektronik.",
        "receipt.print": "Cetak",
        "receipt.pdf": "Unduh PDF",
        "receipt.back": "Kembali ke pesanan",
        "receipt.unpaid_title": "Kwitansi belum tersedia",
        "receipt.unpaid_body": (
            "Kwitansi dibuat setelah pembayaran diterima. Pesanan ini belum dibayar."
        ),
        "nav.admin": "Admin",
        "admin.title": "Operator: cari akun",
        "admin.search": "Email atau ID akun",
        "admin.search_submit": "Cari",
        "admin.not_found": "Tidak ada akun dengan email atau ID itu.",
        "admin.account": "Akun {id}",
        "admin.users": "Pengguna",
        "admin.state": "Status",
        "admin.enabled": "Aktif",
        "admin.disabled": "Dinonaktifkan {when} oleh {by}: {reason}",
        "admin.adjust": "Kredit atau debit",
        "admin.amount": "Jumlah IDR (negatif untuk debit)",
        "admin.reason": "Alasan (wajib, tercatat di ledger)",
        "admin.adjust_submit": "Catat penyesuaian",
        "admin.disable": "Nonaktifkan akun",
        "admin.disable_submit": "Nonaktifkan (semua key berhenti)",
        "admin.enable_submit": "Aktifkan kembali",
        "admin.done.adjust": "Penyesuaian dicatat.",
        "admin.done.disable": "Akun dinonaktifkan.",
        "admin.done.enable": "Akun diaktifkan kembali.",
        "admin.error": "Periksa isian {field}.",
        "admin.actor": "Oleh",
        "nav.usage": "Pemakaian",
        "nav.settings": "Pengaturan",
        "nav.login": "Masuk",
        "nav.signup": "Daftar",
        "nav.logout": "Keluar",
        "form.email_label": "Alamat email",
        "form.password_label": "Kata sandi",
        "form.required": "Wajib diisi.",
        "form.email": "Tulis alamat email seperti nama@contoh.co.id.",
        "form.password_short": "Kata sandi minimal 10 karakter.",
        "form.key_name": "Nama key paling panjang 100 karakter, tanpa karakter kontrol.",
        "field.email": "Alamat email ini tidak dapat dipakai. Periksa kembali penulisannya.",
        "field.password": (
            "Kata sandi ini tidak memenuhi syarat: minimal 10 karakter, bukan kata sandi umum, dan "
            "bukan alamat email Anda."
        ),
        "field.current_password": "Kata sandi saat ini salah.",
        "field.new_password": (
            "Kata sandi baru tidak memenuhi syarat: minimal 10 karakter, berbeda dari yang lama, "
            "dan bukan kata sandi umum."
        ),
        "field.name": "Nama key tidak dapat dipakai.",
        "signup.title": "Buat akun aiport",
        "signup.lead": "Satu akun, satu saldo Rupiah, dan API key Anda sendiri dalam dua menit.",
        "signup.password_rule": "Minimal 10 karakter. Hindari kata sandi yang mudah ditebak.",
        "signup.submit": "Daftar",
        "signup.have_account": "Sudah punya akun?",
        "signup_sent.title": "Periksa email Anda",
        "signup_sent.body": (
            "Kami mengirim tautan konfirmasi ke alamat yang Anda daftarkan. Buka tautan itu untuk "
            "mengaktifkan akun, lalu masuk."
        ),
        "signup_sent.spam": "Tidak ada email dalam beberapa menit? Periksa folder spam.",
        "verify.title": "Konfirmasi alamat email",
        "verify.body": (
            "Tekan tombol di bawah untuk mengonfirmasi alamat email dan mengaktifkan akun."
        ),
        "verify.submit": "Konfirmasi email",
        "verify.bad_link": (
            "Tautan konfirmasi ini tidak berlaku, sudah kedaluwarsa, atau sudah dipakai."
        ),
        "login.title": "Masuk",
        "login.submit": "Masuk",
        "login.failed": "Email atau kata sandi salah.",
        "login.not_verified": (
            "Alamat email ini belum dikonfirmasi. Buka tautan di email pendaftaran terlebih dahulu."
        ),
        "login.verified": "Email Anda sudah dikonfirmasi. Silakan masuk.",
        "login.reset": "Kata sandi Anda sudah diganti. Silakan masuk dengan kata sandi baru.",
        "login.forgot": "Lupa kata sandi?",
        "login.no_account": "Belum punya akun?",
        "forgot.title": "Atur ulang kata sandi",
        "forgot.lead": (
            "Tulis alamat email akun Anda; kami akan mengirim tautan untuk mengganti kata sandi."
        ),
        "forgot.submit": "Kirim tautan",
        "forgot.sent": (
            "Jika alamat itu terdaftar, kami sudah mengirim tautan untuk mengganti kata sandi. "
            "Tautan hanya berlaku sebentar dan sekali pakai."
        ),
        "reset.title": "Kata sandi baru",
        "reset.password_label": "Kata sandi baru",
        "reset.submit": "Simpan kata sandi",
        "reset.bad_link": (
            "Tautan ini tidak berlaku, sudah kedaluwarsa, atau sudah dipakai. Minta tautan baru."
        ),
        "reset.ask_again": "Minta tautan baru",
        "settings.title": "Pengaturan",
        "settings.signed_in_as": "Masuk sebagai {email}",
        "settings.change_password": "Ganti kata sandi",
        "settings.current": "Kata sandi saat ini",
        "settings.new": "Kata sandi baru",
        "settings.ends_sessions": (
            "Mengganti kata sandi akan mengeluarkan semua sesi lain akun ini."
        ),
        "settings.submit": "Ganti kata sandi",
        "settings.changed": "Kata sandi sudah diganti. Sesi lain sudah dikeluarkan.",
        "dashboard.title": "Dasbor",
        "dashboard.available": "Saldo tersedia",
        "dashboard.held": "Sedang ditahan",
        "dashboard.held_note": "Dana untuk panggilan dan job yang masih berjalan.",
        "dashboard.month": "Pemakaian bulan ini",
        "dashboard.month_requests": "{count} permintaan",
        "dashboard.by_model": "Bulan ini per model",
        "dashboard.chart": "Pengeluaran 30 hari terakhir per model",
        "dashboard.chart_title": "Pengeluaran harian {first} sampai {last}, per model",
        "dashboard.chart_peak": "Hari tertinggi:",
        "dashboard.chart_empty": "Belum ada pengeluaran dalam 30 hari terakhir.",
        "dashboard.recent": "Permintaan terbaru",
        "keys.title": "API key",
        "keys.create": "Buat key baru",
        "keys.name_label": "Nama (mis. server produksi)",
        "keys.create_submit": "Buat key",
        "keys.created": "Key “{name}” sudah dibuat",
        "keys.shown_once": (
            "Salin key ini sekarang. Demi keamanan, key hanya ditampilkan sekali ini dan tidak "
            "bisa dilihat lagi."
        ),
        "keys.copy": "Salin",
        "keys.copied": "Tersalin",
        "keys.list": "Key Anda",
        "keys.col.name": "Nama",
        "keys.col.prefix": "Awalan",
        "keys.col.created": "Dibuat",
        "keys.col.last_used": "Terakhir dipakai",
        "keys.col.limits": "Batas",
        "keys.cap.daily": "Hari ini {spent} dari {cap}",
        "keys.cap.monthly": "Bulan ini {spent} dari {cap}",
        "keys.cap.lifetime": "Total {spent} dari {cap}",
        "keys.models": "Model: {models}",
        "keys.expires": "Berlaku sampai {when}",
        "keys.no_limits": "Tanpa batas",
        "keys.limits_hint": (
            "Batas belanja, daftar model, dan masa berlaku key diatur lewat API "
            "(POST /v1/keys/{id}); batas harian dan bulanan dimulai ulang tengah malam WIB."
        ),
        "keys.col.status": "Status",
        "keys.col.actions": "Tindakan",
        "keys.never": "Belum pernah",
        "keys.active": "Aktif",
        "keys.revoked": "Dicabut {when}",
        "keys.revoke": "Cabut",
        "keys.none": "Belum ada key. Buat satu di atas.",
        "usage.title": "Pemakaian",
        "usage.from": "Dari tanggal",
        "usage.to": "Sampai tanggal",
        "usage.key": "Key",
        "usage.any_key": "Semua key",
        "usage.apply": "Terapkan",
        "usage.csv": "Unduh CSV",
        "settings.time_zone": "Zona waktu",
        "settings.time_zone_label": "Tampilkan waktu dalam",
        "settings.zone_submit": "Simpan zona waktu",
        "settings.zone_saved": "Zona waktu disimpan.",
        "zone.Asia/Jakarta": "WIB (Asia/Jakarta)",
        "zone.Asia/Makassar": "WITA (Asia/Makassar)",
        "zone.Asia/Jayapura": "WIT (Asia/Jayapura)",
        "zone.UTC": "UTC",
        "usage.zone_note": "Tanggal dan waktu dalam {zone}.",
        "usage.time": "Waktu",
        "usage.tokens_in": "Token input",
        "usage.tokens_cached": "Dari cache",
        "usage.tokens_out": "Token output",
        "usage.tokens_reasoning": "Penalaran",
        "usage.cost": "Biaya",
        "usage.requests": "Permintaan",
        "usage.status": "Status",
        "usage.latency": "Latensi",
        "usage.request_id": "ID permintaan",
        "usage.next": "Halaman berikutnya",
        "usage.none": "Belum ada pemakaian untuk filter ini.",
        "usage.bad_date": "Tulis tanggal sebagai TTTT-BB-HH.",
        "usage.bad_range": "Tanggal akhir harus sama dengan atau setelah tanggal awal.",
        "usage.bad_model": "Tulis ID model, mis. deepseek-v4-flash.",
        "usage.bad_key": "Pilih salah satu key Anda.",
        "usage.bad_filter": "Filter ini tidak dapat dipakai.",
        "usage.status.in_progress": "Berjalan",
        "usage.status.succeeded": "Berhasil",
        "usage.status.refunded": "Dikembalikan",
        "usage.status.expired": "Kedaluwarsa",
        "error.400.title": "Permintaan tidak valid",
        "error.400.body": "Permintaan ini tidak dapat diproses. Periksa isiannya dan coba lagi.",
        "error.429.title": "Terlalu banyak percobaan",
        "error.429.body": "Demi keamanan akun, tunggu sekitar {minutes} menit lalu coba lagi.",
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
        "nav.dashboard": "Dashboard",
        "nav.api_keys": "API keys",
        "nav.jobs": "Jobs",
        "jobs.title": "Image and video jobs",
        "jobs.status": "Status",
        "jobs.any_status": "Any status",
        "jobs.apply": "Apply",
        "jobs.held": "Held",
        "jobs.charged": "Charged",
        "jobs.refund": "Refunded",
        "jobs.result": "Result",
        "jobs.open_result": "Open",
        "jobs.none": "No jobs match this filter yet.",
        "jobs.next": "Next page",
        "jobs.status.pending": "Pending",
        "jobs.status.processing": "Processing",
        "jobs.status.done": "Done",
        "jobs.status.failed": "Failed",
        "nav.billing": "Billing",
        "billing.title": "Billing and balance",
        "billing.statement": "Statement",
        "billing.in_flight": "Held right now",
        "billing.in_flight_note": (
            "Reserved for calls and jobs still running; what they do not use comes back when "
            "they end."
        ),
        "billing.none_in_flight": "Nothing is held right now.",
        "billing.kind": "Kind",
        "billing.amount": "Amount",
        "billing.balance_after": "Balance after",
        "billing.description": "Description",
        "billing.none": "No movements yet.",
        "billing.next": "Next page",
        "billing.refunds_note": (
            "Failed calls are not charged: their hold comes back whole (see Usage, status "
            "Refunded)."
        ),
        "billing.topup": "Top up",
        "billing.refunds": "Latest refunds",
        "billing.no_refunds": "No failed, refunded calls yet.",
        "billing.kind.topup": "Top-up",
        "billing.kind.charge": "Charge",
        "billing.kind.promotion": "Promotion",
        "billing.kind.adjustment": "Adjustment",
        "billing.kind.reversal": "Top-up reversed",
        "billing.topups": "Recent top-ups",
        "billing.topups_all": "All top-ups",
        "billing.debt_title": "Your account owes {debt}",
        "billing.debt_body": (
            "A top-up you had already spent was refunded or charged back by the bank. Every API "
            "key of this account is suspended until this debt is paid; a top-up pays it first."
        ),
        "billing.debt_pay": "Pay it with a top-up",
        "billing.alert": "Low-balance alert",
        "billing.alert_note": (
            "We email every user of this account when the available balance falls below this "
            "threshold."
        ),
        "billing.alert_current": "Current threshold: {threshold}.",
        "billing.alert_off": "The alert is off.",
        "billing.alert_label": "Threshold (Rp)",
        "billing.alert_save": "Save the threshold",
        "billing.alert_clear": "Turn the alert off",
        "billing.alert_saved": "Low-balance alert saved.",
        "billing.alert_invalid": "Write a whole-rupiah threshold above 0, e.g. 20000.",
        "topup.title": "Top up",
        "topup.lead": (
            "Pay in Rupiah by QRIS, bank virtual account or e-wallet. The balance goes up as "
            "soon as the payment is confirmed; no monthly fee and no expiry."
        ),
        "topup.choose": "Choose an amount",
        "topup.other_amount": "Or write another amount (Rp)",
        "topup.limits": "Minimum {minimum}, maximum {maximum}.",
        "topup.limit_min": "Minimum {minimum}.",
        "topup.review_submit": "Next: see the fee",
        "topup.unavailable": "Top-ups are unavailable right now. Please try again shortly.",
        "topup.amount_invalid": "Write a whole-rupiah amount, e.g. 100000 or 100.000.",
        "topup.amount_too_small": "The minimum is {minimum}.",
        "topup.amount_refused": "This amount cannot be topped up. Check the limits below.",
        "topup.gateway_refused": (
            "This payment gateway cannot be used right now. Choose another or try again."
        ),
        "topup.review_title": "Review before paying",
        "topup.review_note": (
            "You will go to the chosen gateway's payment page, then come back here. The balance "
            "goes up by the top-up amount; the gateway's fee is paid on top."
        ),
        "topup.amount": "Top-up amount",
        "topup.fee": "Fee",
        "topup.total": "Total to pay",
        "topup.gateway": "Payment gateway",
        "topup.pay_with": "Pay with {gateway}",
        "topup.change_amount": "Change the amount",
        "topup.history": "Your top-ups",
        "topup.none": "No top-ups yet.",
        "topup.next": "Next page",
        "topup.created": "Created",
        "topup.status": "Status",
        "topup.method": "Method",
        "topup.paid_at": "Paid",
        "topup.expires_at": "Pay before",
        "topup.reversed": "Taken back",
        "topup.open": "View",
        "topup.receipt": "Receipt",
        "topup.order_title": "Top-up {id}",
        "topup.continue": "Continue paying",
        "topup.waiting": (
            "Waiting for the payment to be confirmed. This page refreshes itself; you may close "
            "it, the balance still goes up once the payment arrives."
        ),
        "topup.paid_note": "Payment received: your balance went up.",
        "topup.ended_note": "This order was not paid. No money moved.",
        "topup.reversed_note": (
            "This payment was refunded or charged back by the bank; its amount was taken back "
            "from the balance."
        ),
        "topup.new": "Top up again",
        "topup.debt_note": "Your next top-up pays the debt of {debt} first.",
        "topup.forwarding_title": "Going to the payment page",
        "topup.forwarding_body": (
            "The {gateway} payment page is opening. If it does not, press the button below."
        ),
        "topup.status.awaiting_payment": "Awaiting payment",
        "topup.status.pending": "Processing",
        "topup.status.paid": "Paid",
        "topup.status.expired": "Expired",
        "topup.status.cancelled": "Cancelled",
        "topup.status.failed": "Failed",
        "topup.status.refunded": "Refunded",
        "topup.status.charged_back": "Charged back",
        "receipt.title": "Receipt",
        "receipt.number": "Number",
        "receipt.date": "Date",
        "receipt.received_from": "Received from",
        "receipt.amount": "The sum of",
        "receipt.in_words": "In words",
        "receipt.for": "For",
        "receipt.purpose": "aiport balance top-up",
        "receipt.payment": "Paid through",
        "receipt.description": "Description",
        "receipt.dpp": "Tax base (DPP)",
        "receipt.ppn": "VAT (PPN) {rate}%",
        "receipt.ppn_included": "The total includes VAT (PPN).",
        "receipt.total": "Total",
        "receipt.tax_id": "Tax id (NPWP)",
        "receipt.received_by": "Received by,",
        "receipt.electronic": "This receipt was issued electronically.",
        "receipt.print": "Print",
        "receipt.pdf": "Download PDF",
        "receipt.back": "Back to the order",
        "receipt.unpaid_title": "No receipt yet",
        "receipt.unpaid_body": (
            "A receipt is issued once the payment is received. This order is not paid yet."
        ),
        "nav.admin": "Admin",
        "admin.title": "Operator: find an account",
        "admin.search": "Email or account id",
        "admin.search_submit": "Find",
        "admin.not_found": "No account has that email or id.",
        "admin.account": "Account {id}",
        "admin.users": "Users",
        "admin.state": "State",
        "admin.enabled": "Enabled",
        "admin.disabled": "Disabled {when} by {by}: {reason}",
        "admin.adjust": "Credit or debit",
        "admin.amount": "IDR amount (negative for a debit)",
        "admin.reason": "Reason (required, kept on the ledger)",
        "admin.adjust_submit": "Record the adjustment",
        "admin.disable": "Disable the account",
        "admin.disable_submit": "Disable (every key stops)",
        "admin.enable_submit": "Enable again",
        "admin.done.adjust": "Adjustment recorded.",
        "admin.done.disable": "Account disabled.",
        "admin.done.enable": "Account enabled again.",
        "admin.error": "Check the {field} field.",
        "admin.actor": "By",
        "nav.usage": "Usage",
        "nav.settings": "Settings",
        "nav.login": "Log in",
        "nav.signup": "Sign up",
        "nav.logout": "Log out",
        "form.email_label": "Email address",
        "form.password_label": "Password",
        "form.required": "This field is required.",
        "form.email": "Write an email address such as name@example.com.",
        "form.password_short": "A password has at least 10 characters.",
        "form.key_name": "A key name has at most 100 characters and no control characters.",
        "field.email": "This email address cannot be used. Check how it is written.",
        "field.password": (
            "This password does not meet the rules: at least 10 characters, not a common password, "
            "and not your email address."
        ),
        "field.current_password": "The current password is not correct.",
        "field.new_password": (
            "The new password does not meet the rules: at least 10 characters, different from the "
            "old one, and not a common password."
        ),
        "field.name": "This key name cannot be used.",
        "signup.title": "Create your aiport account",
        "signup.lead": "One account, one Rupiah balance, and your own API key in two minutes.",
        "signup.password_rule": "At least 10 characters. Avoid passwords that are easy to guess.",
        "signup.submit": "Sign up",
        "signup.have_account": "Already have an account?",
        "signup_sent.title": "Check your email",
        "signup_sent.body": (
            "We sent a confirmation link to the address you signed up with. Open it to activate "
            "your account, then log in."
        ),
        "signup_sent.spam": "No mail after a few minutes? Look in your spam folder.",
        "verify.title": "Confirm your email address",
        "verify.body": (
            "Press the button below to confirm your email address and activate the account."
        ),
        "verify.submit": "Confirm email",
        "verify.bad_link": "This confirmation link is not valid, has expired or was already used.",
        "login.title": "Log in",
        "login.submit": "Log in",
        "login.failed": "Incorrect email or password.",
        "login.not_verified": (
            "This email address is not confirmed yet. Open the link in your sign-up email first."
        ),
        "login.verified": "Your email address is confirmed. Please log in.",
        "login.reset": "Your password was changed. Log in with the new one.",
        "login.forgot": "Forgot your password?",
        "login.no_account": "No account yet?",
        "forgot.title": "Reset your password",
        "forgot.lead": (
            "Enter your account's email address; we will send a link to set a new password."
        ),
        "forgot.submit": "Send the link",
        "forgot.sent": (
            "If that address is registered, we sent it a link to set a new password. The link "
            "works once and only for a short time."
        ),
        "reset.title": "New password",
        "reset.password_label": "New password",
        "reset.submit": "Save the password",
        "reset.bad_link": (
            "This link is not valid, has expired or was already used. Ask for a new one."
        ),
        "reset.ask_again": "Ask for a new link",
        "settings.title": "Settings",
        "settings.signed_in_as": "Logged in as {email}",
        "settings.change_password": "Change password",
        "settings.current": "Current password",
        "settings.new": "New password",
        "settings.ends_sessions": (
            "Changing the password logs out every other session of this account."
        ),
        "settings.submit": "Change password",
        "settings.changed": "Your password was changed. Every other session was logged out.",
        "dashboard.title": "Dashboard",
        "dashboard.available": "Available balance",
        "dashboard.held": "Held",
        "dashboard.held_note": "Reserved for calls and jobs still running.",
        "dashboard.month": "Spent this month",
        "dashboard.month_requests": "{count} requests",
        "dashboard.by_model": "This month by model",
        "dashboard.chart": "Spend over the last 30 days, by model",
        "dashboard.chart_title": "Daily spend from {first} to {last}, by model",
        "dashboard.chart_peak": "Busiest day:",
        "dashboard.chart_empty": "No spend in the last 30 days yet.",
        "dashboard.recent": "Recent requests",
        "keys.title": "API keys",
        "keys.create": "Create a key",
        "keys.name_label": "Name (e.g. production server)",
        "keys.create_submit": "Create key",
        "keys.created": "Key “{name}” created",
        "keys.shown_once": (
            "Copy this key now. For your security it is shown only this once and cannot be seen "
            "again."
        ),
        "keys.copy": "Copy",
        "keys.copied": "Copied",
        "keys.list": "Your keys",
        "keys.col.name": "Name",
        "keys.col.prefix": "Prefix",
        "keys.col.created": "Created",
        "keys.col.last_used": "Last used",
        "keys.col.limits": "Limits",
        "keys.cap.daily": "Today {spent} of {cap}",
        "keys.cap.monthly": "This month {spent} of {cap}",
        "keys.cap.lifetime": "In all {spent} of {cap}",
        "keys.models": "Models: {models}",
        "keys.expires": "Valid until {when}",
        "keys.no_limits": "No limits",
        "keys.limits_hint": (
            "Set a key's spend caps, models and expiry through the API "
            "(POST /v1/keys/{id}); daily and monthly caps start afresh at midnight WIB."
        ),
        "keys.col.status": "Status",
        "keys.col.actions": "Actions",
        "keys.never": "Never",
        "keys.active": "Active",
        "keys.revoked": "Revoked {when}",
        "keys.revoke": "Revoke",
        "keys.none": "No keys yet. Create one above.",
        "usage.title": "Usage",
        "usage.from": "From",
        "usage.to": "To",
        "usage.key": "Key",
        "usage.any_key": "Any key",
        "usage.apply": "Apply",
        "usage.csv": "Download CSV",
        "settings.time_zone": "Time zone",
        "settings.time_zone_label": "Show times in",
        "settings.zone_submit": "Save time zone",
        "settings.zone_saved": "Time zone saved.",
        "zone.Asia/Jakarta": "WIB (Asia/Jakarta)",
        "zone.Asia/Makassar": "WITA (Asia/Makassar)",
        "zone.Asia/Jayapura": "WIT (Asia/Jayapura)",
        "zone.UTC": "UTC",
        "usage.zone_note": "Dates and times in {zone}.",
        "usage.time": "Time",
        "usage.tokens_in": "Input tokens",
        "usage.tokens_cached": "Cached",
        "usage.tokens_out": "Output tokens",
        "usage.tokens_reasoning": "Reasoning",
        "usage.cost": "Cost",
        "usage.requests": "Requests",
        "usage.status": "Status",
        "usage.latency": "Latency",
        "usage.request_id": "Request id",
        "usage.next": "Next page",
        "usage.none": "No usage for these filters yet.",
        "usage.bad_date": "Write the date as YYYY-MM-DD.",
        "usage.bad_range": "The end date must be on or after the start date.",
        "usage.bad_model": "Write a model id, e.g. deepseek-v4-flash.",
        "usage.bad_key": "Choose one of your keys.",
        "usage.bad_filter": "This filter cannot be used.",
        "usage.status.in_progress": "In progress",
        "usage.status.succeeded": "Succeeded",
        "usage.status.refunded": "Refunded",
        "usage.status.expired": "Expired",
        "error.400.title": "Invalid request",
        "error.400.body": "This request cannot be processed. Check what you entered and try again.",
        "error.429.title": "Too many attempts",
        "error.429.body": "To protect accounts, please wait about {minutes} minutes and try again.",
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

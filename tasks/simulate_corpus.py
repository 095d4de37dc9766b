"""What the simulated traffic says: phrase banks, slot values and planted PII.

Templates use `{slot}` placeholders that `Slots` fills once per session; an opener's
answer is `answers[index % len(answers)]`, so each phrasing maps to one answer style.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import TypeVar

T = TypeVar("T")

SUPPORT = "support-assistant"
SALES = "sales-assistant"


@dataclass(frozen=True)
class Topic:
    """What users ask about one topic and how the assistant answers."""

    openers: tuple[str, ...]
    answers: tuple[str, ...]
    followups: tuple[tuple[str, str], ...]


SUPPORT_WEIGHTS = {
    "password_reset": 0.14,
    "billing_refund": 0.13,
    "shipping_delay": 0.16,
    "order_cancellation": 0.10,
    "account_deletion": 0.05,
    "subscription_upgrade": 0.08,
    "app_crash": 0.10,
    "invoice_request": 0.07,
    "address_change": 0.09,
    "promo_code": 0.08,
}

SALES_WEIGHTS = {
    "pricing": 0.32,
    "demo_booking": 0.22,
    "enterprise_plan": 0.14,
    "discounts": 0.17,
    "integrations": 0.15,
}

_SUPPORT_EN = {
    "password_reset": Topic(
        openers=(
            "I forgot my password and can't log in.",
            "How do I reset my password?",
            "The password reset email never arrived.",
            "I keep getting 'invalid password' even though I'm sure it's right.",
            "My account got locked after too many login attempts.",
            "The reset link says it has expired.",
            "Can you help me change my password? I think someone else knows it.",
            "I can't sign in to the {app} on my {device}.",
            "Reset password link not working on my {device}.",
            "I changed my email last month and now I can't log in.",
            "Where do I set a new password?",
            "Login keeps failing since {date}.",
        ),
        answers=(
            "Sorry you're locked out. Go to {site}/reset, enter the email on your "
            "account and we'll send a reset link that is valid for 30 minutes. If it "
            "doesn't arrive within 5 minutes, check your spam folder.",
            "You can reset your password at {site}/reset. Enter your account email, "
            "open the link we send and choose a new password of at least 10 "
            "characters. After 5 failed attempts the account locks for 15 minutes.",
            "Let's get you back in. Tap 'Forgot password?' on the sign-in screen of "
            "the {app}, then follow the link in the email we send. Reset links expire "
            "after 30 minutes, so request a new one if yours has expired.",
        ),
        followups=(
            (
                "I still haven't received the email.",
                "Please check your spam or promotions folder and make sure you're "
                "using the email on your account. I've just sent a new reset link; it "
                "is valid for 30 minutes.",
            ),
            (
                "Does the new password need special characters?",
                "Your new password needs at least 10 characters, including one number. "
                "Special characters are allowed but not required.",
            ),
            (
                "Will I be logged out on my other devices?",
                "Yes. After a password reset every device is signed out, and you'll "
                "need to sign in again with the new password.",
            ),
        ),
    ),
    "billing_refund": Topic(
        openers=(
            "I want a refund for my {product}.",
            "I was charged twice for order {order}.",
            "When will I get my refund of {amount}?",
            "I returned the {product} on {date} but still no refund.",
            "There's a charge of {amount} on my card I don't recognize.",
            "Can I get my money back for order {order}? The {product} arrived broken.",
            "You charged me {amount} instead of the sale price.",
            "My refund for {order} hasn't shown up yet.",
            "How long do refunds take to reach my bank?",
            "Please refund the {amount} you took after I cancelled.",
        ),
        answers=(
            "I'm sorry about the trouble with order {order}. I've opened a refund "
            "request for {amount}; once approved, it reaches your original payment "
            "method within 5 to 10 business days.",
            "Refunds go back to the original payment method. For order {order}, the "
            "refund of {amount} has been started and usually shows on your statement "
            "within 5 to 10 business days, depending on your bank.",
            "Thanks for reporting this. I can see the charge of {amount} on order "
            "{order}. I've flagged it for our billing team, who will reverse it within "
            "3 business days and email you a confirmation.",
        ),
        followups=(
            (
                "Can you send me a confirmation?",
                "Sure. A refund confirmation for order {order} has been sent to the "
                "email on your account.",
            ),
            (
                "Why does it take so long?",
                "We process refunds within 2 business days; the remaining time is your "
                "bank's processing, which we can't speed up.",
            ),
            (
                "Can I get store credit instead?",
                "Yes. Store credit of {amount} can be added to your account right away "
                "instead of a card refund. Just confirm and I'll apply it.",
            ),
        ),
    ),
    "shipping_delay": Topic(
        openers=(
            "Where is my order {order}?",
            "My {product} was supposed to arrive on {date} and it's still not here.",
            "Order {order} has been stuck in transit for {days} days.",
            "The tracking for {order} hasn't updated since {date}.",
            "Why is my package late?",
            "It says delivered but I never got my {product}.",
            "When will order {order} arrive?",
            "My delivery is {days} days late, what's going on?",
            "Is there a problem with {carrier}? My order {order} isn't moving.",
            "I need the {product} by {eta}, will it make it?",
            "Still waiting on order {order}.",
        ),
        answers=(
            "I'm sorry for the wait. Order {order} is with {carrier} (tracking "
            "{tracking}) and is now expected on {eta}. You'll get an email as soon as "
            "it's out for delivery.",
            "Thanks for your patience. {carrier} reports a delay in its network; your "
            "order {order} is expected to arrive by {eta}. If it hasn't arrived by "
            "then, we'll send a replacement at no cost.",
            "I checked order {order}: it left our warehouse and is in transit with "
            "{carrier}, tracking number {tracking}. The new estimated delivery date "
            "is {eta}.",
        ),
        followups=(
            (
                "Can you give me the tracking number again?",
                "Of course: your tracking number is {tracking}, and you can follow it "
                "on the {carrier} website.",
            ),
            (
                "What if it doesn't arrive by then?",
                "If order {order} hasn't arrived by {eta}, reply here and we'll ship a "
                "replacement or issue a full refund, whichever you prefer.",
            ),
            (
                "Can I change the delivery address now?",
                "Once a package is with {carrier} we can't change the address, but you "
                "can redirect it from the {carrier} tracking page using {tracking}.",
            ),
        ),
    ),
    "order_cancellation": Topic(
        openers=(
            "I want to cancel order {order}.",
            "How do I cancel my order?",
            "Please cancel the {product} I ordered on {date}.",
            "I ordered the wrong size, can I cancel order {order}?",
            "Cancel my order {order} please.",
            "Is it too late to cancel order {order}?",
            "I placed a duplicate order by mistake.",
            "Can I cancel just the {product} from my order?",
            "Changed my mind about the {product}, cancel it.",
        ),
        answers=(
            "Done: order {order} has been cancelled. The payment of {amount} will be "
            "released within 3 to 5 business days.",
            "Orders can be cancelled until they ship. Order {order} hasn't shipped "
            "yet, so I've cancelled it, and you'll receive a confirmation email "
            "shortly.",
            "Order {order} has already shipped, so it can't be cancelled any more. "
            "Once it arrives, you can return it for free within 30 days at "
            "{site}/returns.",
        ),
        followups=(
            (
                "Will I get charged anything?",
                "No. Cancelled orders are never charged; the pending amount of "
                "{amount} simply disappears from your statement.",
            ),
            (
                "Can I reorder it in a different color?",
                "Yes. The {product} is still in your cart; pick a different color and "
                "check out as usual.",
            ),
        ),
    ),
    "account_deletion": Topic(
        openers=(
            "Please delete my account.",
            "How do I permanently delete my account and all my data?",
            "I want to close my account.",
            "Delete all my personal data under GDPR.",
            "How can I remove my account from the {app}?",
            "I don't shop with Nimbus anymore, please remove my profile.",
            "Can you erase my order history?",
            "Close my account effective immediately.",
        ),
        answers=(
            "I can help with that. Go to Settings > Privacy > Delete account in the "
            "{app} or on {site}. Deletion is final after a 14-day grace period, and "
            "we'll email you a confirmation.",
            "Your deletion request has been registered. Your account and personal "
            "data will be erased within 30 days, as GDPR requires; order records we "
            "must keep for tax reasons are anonymised.",
        ),
        followups=(
            (
                "What happens to my open orders?",
                "Open orders are still delivered. The account is deleted once the "
                "last order is completed.",
            ),
            (
                "Can I undo it?",
                "Yes, within the 14-day grace period: just sign in again and choose "
                "'Keep my account'.",
            ),
        ),
    ),
    "subscription_upgrade": Topic(
        openers=(
            "How do I upgrade from {plan} to {new_plan}?",
            "What's the difference between {plan} and {new_plan}?",
            "I want to switch to the {new_plan} plan.",
            "Can I upgrade mid-month and pay the difference?",
            "Is {new_plan} worth it if I order every week?",
            "Upgrade me to {new_plan} please.",
            "Do I keep my {plan} benefits when I upgrade?",
            "How much is the {new_plan} membership per month?",
        ),
        answers=(
            "You can upgrade from {plan} to {new_plan} anytime under Account > "
            "Membership. The change is immediate and you only pay the prorated "
            "difference for the rest of this month.",
            "{new_plan} adds free express shipping, early access to sales and a 5% "
            "rebate on every order. Upgrading from {plan} takes effect right away; "
            "the price difference is prorated.",
        ),
        followups=(
            (
                "Can I downgrade later?",
                "Yes, you can switch back to {plan} at any time; the change applies "
                "from your next billing date.",
            ),
            (
                "Will my billing date change?",
                "No, your billing date stays the same. You'll see a prorated charge "
                "for the upgrade on your next invoice.",
            ),
        ),
    ),
    "app_crash": Topic(
        openers=(
            "The {app} keeps crashing on my {device}.",
            "The app crashes every time I open my cart.",
            "Since the update to version {version} the app closes on startup.",
            "The {app} freezes at checkout on my {device}.",
            "Black screen after opening the app.",
            "I can't open the app anymore, it just closes.",
            "App crashing on my {device} after the update.",
            "The app crashed while I was paying. Was I charged?",
            "Version {version} won't load my orders.",
        ),
        answers=(
            "Sorry about that. Version {version} has a known issue on some devices. "
            "Please update to the latest version from your app store, then restart "
            "your {device}. If it still crashes, reinstalling the app fixes it in "
            "most cases.",
            "Thanks for reporting this. Please clear the app cache (Settings > Apps > "
            "Nimbus > Storage) and update to the newest version. Your cart and orders "
            "are saved to your account, so nothing is lost.",
            "I'm sorry the app is crashing. Our team knows about a crash in version "
            "{version} and a fix is rolling out today. Meanwhile you can order on "
            "{site} with the same account.",
        ),
        followups=(
            (
                "It still crashes after reinstalling.",
                "Thanks for trying that. Please send us the crash report from Settings "
                "> Help > Report a problem so our engineers can look at your {device}.",
            ),
            (
                "Was my payment taken?",
                "No payment is taken unless you see an order confirmation. I don't see "
                "a new order on your account, so you weren't charged.",
            ),
        ),
    ),
    "invoice_request": Topic(
        openers=(
            "I need an invoice for order {order}.",
            "Can you send me a VAT invoice for my purchase on {date}?",
            "Where can I download invoice {invoice}?",
            "My company needs an invoice with our company name on it.",
            "The invoice for {order} shows the wrong address.",
            "Please resend invoice {invoice}.",
            "How do I get a receipt for {amount}?",
            "Need the invoice for {order} for my expense report.",
        ),
        answers=(
            "You can download the invoice for order {order} under Orders > {order} > "
            "Download invoice. I've also emailed a copy ({invoice}) to the address on "
            "your account.",
            "I've reissued invoice {invoice} for order {order}. To add a company name "
            "or VAT number, update your billing details under Account > Billing and "
            "request a corrected invoice; it takes up to 24 hours.",
        ),
        followups=(
            (
                "Can you add my VAT number?",
                "Yes. Add your VAT number under Account > Billing and I'll issue a "
                "corrected invoice {invoice} within 24 hours.",
            ),
            (
                "Can I get it as a PDF?",
                "All invoices are PDFs. The copy of {invoice} we emailed you is "
                "attached as a PDF file.",
            ),
        ),
    ),
    "address_change": Topic(
        openers=(
            "I need to change the shipping address for order {order}.",
            "I moved, how do I update my address?",
            "Wrong address on order {order}, can you fix it?",
            "Can you ship order {order} to my work address instead?",
            "Update my default delivery address please.",
            "I typed the wrong zip code on my order.",
            "Is it possible to change the address after ordering?",
        ),
        answers=(
            "I can update the address as long as the order hasn't shipped. Order "
            "{order} is still being prepared, so reply with the new address and I'll "
            "change it right away.",
            "You can change your default address under Account > Addresses. Order "
            "{order} has already shipped, so you can redirect the package with "
            "{carrier} using tracking number {tracking}.",
        ),
        followups=(
            (
                "Will it delay my delivery?",
                "Changing the address before shipping doesn't delay order {order}; "
                "it's still expected on {eta}.",
            ),
            (
                "Can I pick it up instead?",
                "Yes, you can choose a {carrier} pickup point near you from the "
                "tracking page for {tracking}.",
            ),
        ),
    ),
    "promo_code": Topic(
        openers=(
            "My promo code isn't working.",
            "The discount code {code} says it's invalid.",
            "I forgot to apply my coupon to order {order}.",
            "Why wasn't the {percent}% discount applied?",
            "Can I use two promo codes on one order?",
            "Code {code} expired yesterday, can you still honor it?",
            "Do you have any discount codes right now?",
            "Promo code not applied at checkout.",
        ),
        answers=(
            "Sorry about that. Code {code} only applies to full-price items. I've "
            "applied a {percent}% credit to order {order} manually; you'll see it as "
            "a refund within 5 business days.",
            "Promo codes must be entered before checkout and can't be combined. Since "
            "order {order} was placed without the code, I've added a {percent}% "
            "discount as store credit to your account.",
        ),
        followups=(
            (
                "Can I use the credit right away?",
                "Yes, the store credit is already on your account and is applied "
                "automatically at your next checkout.",
            ),
            (
                "Why can't I combine codes?",
                "Only one promo code per order is allowed so that discounts stay fair; "
                "we always apply the larger one.",
            ),
        ),
    ),
}

_SUPPORT_ES = {
    "password_reset": Topic(
        openers=(
            "Olvidé mi contraseña y no puedo iniciar sesión.",
            "¿Cómo restablezco mi contraseña?",
            "No me llega el correo para restablecer la contraseña.",
            "Mi cuenta está bloqueada después de varios intentos.",
        ),
        answers=(
            "Lamento las molestias. Ve a {site}/reset, introduce el correo de tu "
            "cuenta y te enviaremos un enlace válido durante 30 minutos. Si no llega, "
            "revisa la carpeta de spam.",
        ),
        followups=(
            (
                "Sigo sin recibir el correo.",
                "Revisa la carpeta de spam y comprueba que usas el correo de tu "
                "cuenta. Acabo de enviarte un nuevo enlace, válido durante 30 minutos.",
            ),
        ),
    ),
    "billing_refund": Topic(
        openers=(
            "Quiero un reembolso por mi pedido {order}.",
            "Me cobraron dos veces el pedido {order}.",
            "¿Cuándo recibiré el reembolso de {amount}?",
            "Devolví el producto el {date} y todavía no tengo el reembolso.",
        ),
        answers=(
            "Siento el problema con el pedido {order}. He abierto una solicitud de "
            "reembolso de {amount}; una vez aprobada, llegará a tu método de pago en "
            "un plazo de 5 a 10 días hábiles.",
        ),
        followups=(
            (
                "¿Me puedes enviar una confirmación?",
                "Claro. Te hemos enviado la confirmación del reembolso del pedido "
                "{order} al correo de tu cuenta.",
            ),
        ),
    ),
    "shipping_delay": Topic(
        openers=(
            "¿Dónde está mi pedido {order}?",
            "Mi pedido {order} lleva {days} días en tránsito.",
            "El seguimiento de {order} no se actualiza desde el {date}.",
            "Mi paquete llega tarde, ¿qué pasa?",
        ),
        answers=(
            "Siento la espera. Tu pedido {order} está con {carrier} (seguimiento "
            "{tracking}) y ahora se espera para el {eta}. Te avisaremos por correo "
            "cuando salga para entrega.",
        ),
        followups=(
            (
                "¿Y si no llega para entonces?",
                "Si el pedido {order} no ha llegado el {eta}, escríbenos y te "
                "enviaremos un reemplazo o te devolveremos el importe completo.",
            ),
        ),
    ),
    "order_cancellation": Topic(
        openers=(
            "Quiero cancelar el pedido {order}.",
            "¿Cómo cancelo mi pedido?",
            "Por favor, cancelad el pedido que hice el {date}.",
        ),
        answers=(
            "Hecho: el pedido {order} se ha cancelado. El pago de {amount} se liberará "
            "en un plazo de 3 a 5 días hábiles.",
        ),
        followups=(
            (
                "¿Me vais a cobrar algo?",
                "No. Los pedidos cancelados nunca se cobran; el importe pendiente de "
                "{amount} desaparecerá de tu extracto.",
            ),
        ),
    ),
    "account_deletion": Topic(
        openers=(
            "Por favor, eliminad mi cuenta.",
            "¿Cómo borro mi cuenta y todos mis datos?",
            "Quiero cerrar mi cuenta.",
        ),
        answers=(
            "Puedo ayudarte. Ve a Ajustes > Privacidad > Eliminar cuenta en la {app} "
            "o en {site}. La eliminación es definitiva tras un periodo de gracia de 14 "
            "días y te enviaremos una confirmación por correo.",
        ),
        followups=(
            (
                "¿Puedo deshacerlo?",
                "Sí, durante los 14 días de gracia: solo tienes que iniciar sesión y "
                "elegir «Mantener mi cuenta».",
            ),
        ),
    ),
    "subscription_upgrade": Topic(
        openers=(
            "¿Cómo paso del plan {plan} al {new_plan}?",
            "¿Qué diferencia hay entre {plan} y {new_plan}?",
            "Quiero cambiarme al plan {new_plan}.",
        ),
        answers=(
            "Puedes pasar de {plan} a {new_plan} en cualquier momento en Cuenta > "
            "Suscripción. El cambio es inmediato y solo pagas la diferencia "
            "proporcional de este mes.",
        ),
        followups=(
            (
                "¿Puedo volver a bajar de plan después?",
                "Sí, puedes volver a {plan} cuando quieras; el cambio se aplica desde "
                "tu próxima fecha de facturación.",
            ),
        ),
    ),
    "app_crash": Topic(
        openers=(
            "La {app} se cierra sola en mi {device}.",
            "Desde la actualización a la versión {version} la app no abre.",
            "La app se congela al pagar.",
        ),
        answers=(
            "Lo siento. La versión {version} tiene un error conocido en algunos "
            "dispositivos. Actualiza a la última versión desde tu tienda de "
            "aplicaciones y reinicia tu {device}. Si sigue fallando, reinstalar la "
            "app suele solucionarlo.",
        ),
        followups=(
            (
                "Sigue fallando después de reinstalarla.",
                "Gracias por intentarlo. Envíanos el informe de errores desde Ajustes "
                "> Ayuda > Informar de un problema para que revisemos tu {device}.",
            ),
        ),
    ),
    "invoice_request": Topic(
        openers=(
            "Necesito una factura del pedido {order}.",
            "¿Me podéis enviar la factura {invoice}?",
            "La factura de {order} tiene la dirección equivocada.",
        ),
        answers=(
            "Puedes descargar la factura del pedido {order} en Pedidos > {order} > "
            "Descargar factura. También te he enviado una copia ({invoice}) al correo "
            "de tu cuenta.",
        ),
        followups=(
            (
                "¿Podéis añadir mi NIF?",
                "Sí. Añade tu NIF en Cuenta > Facturación y emitiré una factura "
                "corregida {invoice} en 24 horas.",
            ),
        ),
    ),
    "address_change": Topic(
        openers=(
            "Necesito cambiar la dirección de envío del pedido {order}.",
            "Me he mudado, ¿cómo actualizo mi dirección?",
            "Puse mal el código postal en mi pedido.",
        ),
        answers=(
            "Puedo cambiar la dirección mientras el pedido no se haya enviado. El "
            "pedido {order} todavía se está preparando, así que respóndeme con la "
            "nueva dirección y la cambio ahora mismo.",
        ),
        followups=(
            (
                "¿Se retrasará la entrega?",
                "Cambiar la dirección antes del envío no retrasa el pedido {order}; "
                "sigue previsto para el {eta}.",
            ),
        ),
    ),
    "promo_code": Topic(
        openers=(
            "Mi código promocional no funciona.",
            "El código {code} dice que no es válido.",
            "Olvidé aplicar mi cupón al pedido {order}.",
        ),
        answers=(
            "Lo siento. El código {code} solo se aplica a artículos a precio completo. "
            "He aplicado a mano un {percent} % de descuento al pedido {order}; lo "
            "verás como reembolso en 5 días hábiles.",
        ),
        followups=(
            (
                "¿Puedo usar el crédito ya?",
                "Sí, el crédito ya está en tu cuenta y se aplicará automáticamente en "
                "tu próxima compra.",
            ),
        ),
    ),
}

_SUPPORT_DE = {
    "password_reset": Topic(
        openers=(
            "Ich habe mein Passwort vergessen und kann mich nicht anmelden.",
            "Wie setze ich mein Passwort zurück?",
            "Die E-Mail zum Zurücksetzen des Passworts kommt nicht an.",
            "Mein Konto ist nach zu vielen Anmeldeversuchen gesperrt.",
        ),
        answers=(
            "Das tut mir leid. Gehen Sie auf {site}/reset, geben Sie die "
            "E-Mail-Adresse Ihres Kontos ein, und wir senden Ihnen einen Link, der 30 "
            "Minuten gültig ist. Prüfen Sie bitte auch Ihren Spam-Ordner.",
        ),
        followups=(
            (
                "Die E-Mail ist immer noch nicht da.",
                "Bitte prüfen Sie Ihren Spam-Ordner und ob Sie die E-Mail-Adresse "
                "Ihres Kontos verwenden. Ich habe Ihnen soeben einen neuen Link "
                "geschickt, der 30 Minuten gültig ist.",
            ),
        ),
    ),
    "billing_refund": Topic(
        openers=(
            "Ich möchte eine Rückerstattung für Bestellung {order}.",
            "Mir wurde Bestellung {order} doppelt berechnet.",
            "Wann bekomme ich meine Erstattung über {amount}?",
            "Ich habe die Ware am {date} zurückgeschickt und noch kein Geld erhalten.",
        ),
        answers=(
            "Das tut mir leid. Ich habe für Bestellung {order} eine Rückerstattung "
            "über {amount} angelegt; nach der Freigabe erhalten Sie das Geld innerhalb "
            "von 5 bis 10 Werktagen auf Ihrem ursprünglichen Zahlungsmittel.",
        ),
        followups=(
            (
                "Können Sie mir eine Bestätigung schicken?",
                "Gerne. Die Bestätigung der Rückerstattung für Bestellung {order} "
                "wurde an die E-Mail-Adresse Ihres Kontos gesendet.",
            ),
        ),
    ),
    "shipping_delay": Topic(
        openers=(
            "Wo ist meine Bestellung {order}?",
            "Meine Bestellung {order} ist seit {days} Tagen unterwegs.",
            "Die Sendungsverfolgung für {order} wurde seit dem {date} nicht "
            "aktualisiert.",
            "Mein Paket ist verspätet, was ist los?",
        ),
        answers=(
            "Entschuldigen Sie die Wartezeit. Ihre Bestellung {order} ist bei "
            "{carrier} (Sendungsnummer {tracking}) und wird nun am {eta} erwartet. "
            "Sie erhalten eine E-Mail, sobald sie zugestellt wird.",
        ),
        followups=(
            (
                "Und wenn sie bis dahin nicht ankommt?",
                "Falls Bestellung {order} bis zum {eta} nicht angekommen ist, "
                "schreiben Sie uns, und wir senden Ersatz oder erstatten den vollen "
                "Betrag.",
            ),
        ),
    ),
    "order_cancellation": Topic(
        openers=(
            "Ich möchte Bestellung {order} stornieren.",
            "Wie storniere ich meine Bestellung?",
            "Bitte stornieren Sie meine Bestellung vom {date}.",
        ),
        answers=(
            "Erledigt: Bestellung {order} wurde storniert. Die Zahlung über {amount} "
            "wird innerhalb von 3 bis 5 Werktagen freigegeben.",
        ),
        followups=(
            (
                "Wird mir etwas berechnet?",
                "Nein. Stornierte Bestellungen werden nie berechnet; der vorgemerkte "
                "Betrag von {amount} verschwindet von Ihrem Konto.",
            ),
        ),
    ),
    "account_deletion": Topic(
        openers=(
            "Bitte löschen Sie mein Konto.",
            "Wie lösche ich mein Konto und alle meine Daten?",
            "Ich möchte mein Konto schließen.",
        ),
        answers=(
            "Gerne helfe ich Ihnen. Gehen Sie in der {app} oder auf {site} zu "
            "Einstellungen > Datenschutz > Konto löschen. Nach einer Frist von 14 "
            "Tagen ist die Löschung endgültig, und Sie erhalten eine Bestätigung per "
            "E-Mail.",
        ),
        followups=(
            (
                "Kann ich das rückgängig machen?",
                "Ja, innerhalb der 14-tägigen Frist: Melden Sie sich einfach wieder an "
                "und wählen Sie „Konto behalten“.",
            ),
        ),
    ),
    "subscription_upgrade": Topic(
        openers=(
            "Wie wechsle ich von {plan} zu {new_plan}?",
            "Was ist der Unterschied zwischen {plan} und {new_plan}?",
            "Ich möchte auf den Tarif {new_plan} upgraden.",
        ),
        answers=(
            "Sie können jederzeit unter Konto > Mitgliedschaft von {plan} auf "
            "{new_plan} wechseln. Die Änderung gilt sofort, und Sie zahlen nur die "
            "anteilige Differenz für diesen Monat.",
        ),
        followups=(
            (
                "Kann ich später wieder downgraden?",
                "Ja, Sie können jederzeit zu {plan} zurückwechseln; die Änderung gilt "
                "ab Ihrem nächsten Abrechnungsdatum.",
            ),
        ),
    ),
    "app_crash": Topic(
        openers=(
            "Die {app} stürzt auf meinem {device} ständig ab.",
            "Seit dem Update auf Version {version} startet die App nicht mehr.",
            "Die App friert beim Bezahlen ein.",
        ),
        answers=(
            "Das tut mir leid. Version {version} hat auf einigen Geräten einen "
            "bekannten Fehler. Bitte aktualisieren Sie die App und starten Sie Ihr "
            "{device} neu. Falls sie weiter abstürzt, hilft meist eine "
            "Neuinstallation.",
        ),
        followups=(
            (
                "Sie stürzt nach der Neuinstallation immer noch ab.",
                "Danke fürs Ausprobieren. Bitte senden Sie uns den Absturzbericht über "
                "Einstellungen > Hilfe > Problem melden, damit wir Ihr {device} "
                "prüfen können.",
            ),
        ),
    ),
    "invoice_request": Topic(
        openers=(
            "Ich brauche eine Rechnung für Bestellung {order}.",
            "Können Sie mir die Rechnung {invoice} noch einmal schicken?",
            "Auf der Rechnung für {order} steht die falsche Adresse.",
        ),
        answers=(
            "Sie können die Rechnung für Bestellung {order} unter Bestellungen > "
            "{order} > Rechnung herunterladen. Eine Kopie ({invoice}) habe ich Ihnen "
            "außerdem per E-Mail geschickt.",
        ),
        followups=(
            (
                "Können Sie meine USt-IdNr. ergänzen?",
                "Ja. Tragen Sie Ihre USt-IdNr. unter Konto > Abrechnung ein, und ich "
                "stelle Ihnen innerhalb von 24 Stunden eine korrigierte Rechnung "
                "{invoice} aus.",
            ),
        ),
    ),
    "address_change": Topic(
        openers=(
            "Ich muss die Lieferadresse für Bestellung {order} ändern.",
            "Ich bin umgezogen. Wie ändere ich meine Adresse?",
            "Ich habe bei meiner Bestellung die falsche Postleitzahl angegeben.",
        ),
        answers=(
            "Ich kann die Adresse ändern, solange die Bestellung noch nicht versendet "
            "wurde. Bestellung {order} wird noch vorbereitet; antworten Sie mir "
            "einfach mit der neuen Adresse, und ich ändere sie sofort.",
        ),
        followups=(
            (
                "Verzögert sich dadurch die Lieferung?",
                "Eine Adressänderung vor dem Versand verzögert Bestellung {order} "
                "nicht; sie wird weiterhin am {eta} erwartet.",
            ),
        ),
    ),
    "promo_code": Topic(
        openers=(
            "Mein Gutscheincode funktioniert nicht.",
            "Der Code {code} wird als ungültig angezeigt.",
            "Ich habe vergessen, meinen Gutschein bei Bestellung {order} einzulösen.",
        ),
        answers=(
            "Das tut mir leid. Der Code {code} gilt nur für Artikel zum vollen Preis. "
            "Ich habe Bestellung {order} manuell {percent} % Rabatt gutgeschrieben; "
            "Sie sehen die Erstattung innerhalb von 5 Werktagen.",
        ),
        followups=(
            (
                "Kann ich das Guthaben sofort nutzen?",
                "Ja, das Guthaben ist bereits auf Ihrem Konto und wird bei Ihrem "
                "nächsten Einkauf automatisch verrechnet.",
            ),
        ),
    ),
}

# The product launched in the `new-topic` scenario; no other template names it.
NEW_TOPIC_NAME = "aurora_hub"
NEW_TOPIC = Topic(
    # Openers cycle pairing, firmware, warranty so each maps to its answer.
    openers=(
        "How do I pair my new Aurora Hub with the app?",
        "The Aurora Hub firmware update is stuck at {progress}%.",
        "Is the Aurora Hub covered by warranty if the light ring stops working?",
        "My Aurora Hub won't connect to my {smart_device}.",
        "My Aurora Hub lost all paired devices after the firmware update.",
        "How long is the warranty on the Aurora Hub?",
        "aurora hub not showing up in bluetooth",
        "What firmware version should my Aurora Hub be on?",
        "The Aurora Hub I got on {date} is already dead. Warranty claim?",
        "Aurora Hub keeps blinking orange after setup, how do I pair it?",
        "How do I factory reset the Aurora Hub before updating it?",
        "Can I get a replacement Aurora Hub under warranty?",
    ),
    answers=(
        "To pair your Aurora Hub, open the {app}, tap Devices > Add > Aurora Hub and "
        "hold the button on the hub for 5 seconds until the light ring pulses blue. "
        "Keep your phone within 2 metres while pairing.",
        "Aurora Hub firmware 2.1.4 fixes the stuck-update and pairing issues. Unplug "
        "the hub for 10 seconds and plug it back in; the update resumes on its own "
        "and takes about 8 minutes.",
        "The Aurora Hub has a 2-year warranty. Start a claim under Orders > Aurora "
        "Hub > Warranty and we'll send a replacement within 5 business days.",
    ),
    followups=(
        (
            "The light ring is still blinking orange.",
            "Orange blinking means the hub has no internet connection. Put it on a "
            "2.4 GHz Wi-Fi network; the Aurora Hub doesn't support 5 GHz.",
        ),
        (
            "Where do I find the serial number?",
            "The serial number is under the Aurora Hub and in the {app} under Devices "
            "> Aurora Hub > About.",
        ),
    ),
)

SUPPORT_TOPICS = {"en": _SUPPORT_EN, "es": _SUPPORT_ES, "de": _SUPPORT_DE}

SALES_TOPICS = {
    "en": {
        "pricing": Topic(
            openers=(
                "How much does Nimbus for Business cost?",
                "What's the price per seat on the {sales_plan} plan?",
                "We have {seats} employees, what would we pay per month?",
                "Is there a free trial?",
                "Do you charge annually or monthly?",
                "Can you send me your pricing?",
            ),
            answers=(
                "Nimbus for Business costs $12 per seat per month on Starter and $24 "
                "on Growth; Enterprise is priced per contract. For {seats} seats on "
                "{sales_plan}, that's about {price} per month billed annually. Every "
                "plan starts with a 14-day free trial.",
                "The {sales_plan} plan costs {seat_price} per seat per month with "
                "annual billing (20% more billed monthly). You can start a 14-day "
                "free trial at {sales_site}/trial without a credit card.",
            ),
            followups=(
                (
                    "Is there a setup fee?",
                    "No, there's no setup fee on any plan. Onboarding is included, and "
                    "Growth and Enterprise customers get a dedicated onboarding call.",
                ),
                (
                    "What payment methods do you accept?",
                    "We accept all major credit cards, SEPA direct debit, and bank "
                    "transfer on annual plans.",
                ),
            ),
        ),
        "demo_booking": Topic(
            openers=(
                "Can I book a demo?",
                "I'd like to see a demo with my team on {day_name}.",
                "Do you have a slot for a product demo this week?",
                "Can someone walk us through the platform?",
                "Schedule a demo for {day_name} at {time} please.",
            ),
            answers=(
                "Happy to set that up! I've reserved a 30-minute demo on {day_name} "
                "at {time} your time. You'll get a calendar invite with a video link; "
                "feel free to add your colleagues.",
                "Great! You can pick any open slot at {sales_site}/demo; the next one "
                "is {day_name} at {time}. The demo takes 30 minutes and covers setup, "
                "reporting and integrations.",
            ),
            followups=(
                (
                    "Can I reschedule if needed?",
                    "Of course. The calendar invite has a reschedule link, or just "
                    "reply here and I'll move it.",
                ),
                (
                    "Who will run the demo?",
                    "One of our solutions engineers runs the demo and can answer "
                    "technical questions about your setup.",
                ),
            ),
        ),
        "enterprise_plan": Topic(
            openers=(
                "What does the Enterprise plan include?",
                "Do you offer SSO and audit logs?",
                "We need a custom contract and an SLA for {seats} users.",
                "Is there an Enterprise plan with dedicated support?",
                "Can we get data residency in the EU?",
            ),
            answers=(
                "Enterprise includes SSO (SAML and OIDC), audit logs, a 99.9% uptime "
                "SLA, EU or US data residency and a dedicated customer success "
                "manager. For {seats} users I can connect you with an account "
                "executive for a quote.",
                "Yes, all of that is part of Enterprise: SSO, SCIM provisioning, "
                "audit logs, custom contracts and 24/7 priority support. I've shared "
                "your request for {seats} seats with our enterprise team, who will "
                "contact you within one business day.",
            ),
            followups=(
                (
                    "Do you sign DPAs?",
                    "Yes, we sign a GDPR data processing agreement with every "
                    "Enterprise customer; our standard DPA is at "
                    "{sales_site}/legal/dpa.",
                ),
                (
                    "Can we pay by invoice?",
                    "Yes, Enterprise customers pay by invoice with 30-day payment "
                    "terms.",
                ),
            ),
        ),
        "discounts": Topic(
            openers=(
                "Do you offer discounts for nonprofits?",
                "Is there a discount if we pay annually?",
                "We're a startup, any special pricing?",
                "Can you do a better price for {seats} seats?",
                "Do you have education discounts?",
            ),
            answers=(
                "Yes! Annual billing saves 20%, nonprofits and schools get an extra "
                "30% off, and startups in our partner program get 50% off the first "
                "year. For {seats} seats on {sales_plan}, that's {price} per month "
                "before those discounts.",
                "We offer volume discounts from 50 seats and 20% off with annual "
                "billing. For {seats} seats I can prepare a quote with the volume "
                "discount applied; shall I send it to your email?",
            ),
            followups=(
                (
                    "Can discounts be combined?",
                    "The annual-billing discount combines with nonprofit, education "
                    "or startup pricing; volume discounts go into a custom quote.",
                ),
                (
                    "How do we prove nonprofit status?",
                    "Upload your registration certificate at {sales_site}/nonprofit "
                    "and we'll apply the discount within 2 business days.",
                ),
            ),
        ),
        "integrations": Topic(
            openers=(
                "Does Nimbus integrate with {tool}?",
                "Can we sync our contacts from {tool}?",
                "Do you have an API?",
                "How long does it take to set up the {tool} integration?",
                "Do you support webhooks?",
            ),
            answers=(
                "Yes, there's a native {tool} integration. Connect it under Settings "
                "> Integrations in about 5 minutes; data syncs every 15 minutes in "
                "both directions.",
                "Nimbus connects to {tool} out of the box and offers a REST API and "
                "webhooks for everything else. The API docs are at "
                "{sales_site}/developers; Growth plans and above include API access.",
            ),
            followups=(
                (
                    "Is the integration included in our plan?",
                    "All native integrations, including {tool}, are included in every "
                    "plan at no extra cost.",
                ),
                (
                    "Do you have sandbox accounts?",
                    "Yes, Growth and Enterprise customers get a free sandbox "
                    "workspace for testing integrations.",
                ),
            ),
        ),
    }
}

# Turns any topic can get once a session is under way.
GENERIC_FOLLOWUPS = {
    SUPPORT: {
        "en": (
            (
                "Thanks, that worked!",
                "Glad I could help! Is there anything else I can do for you?",
            ),
            (
                "Can I talk to a human?",
                "Of course. I've passed this conversation to a support agent, who "
                "will reply by email within 2 hours.",
            ),
            (
                "That didn't help.",
                "I'm sorry about that. I've escalated your case to our support team; "
                "an agent will contact you within 24 hours.",
            ),
            ("ok thanks", "You're welcome! Have a great day."),
        ),
        "es": (
            (
                "Gracias, ¡funcionó!",
                "¡Me alegro de haberte ayudado! ¿Puedo ayudarte en algo más?",
            ),
            (
                "¿Puedo hablar con una persona?",
                "Por supuesto. He pasado esta conversación a un agente de soporte, que "
                "te responderá por correo en un plazo de 2 horas.",
            ),
        ),
        "de": (
            (
                "Danke, hat funktioniert!",
                "Freut mich, dass ich helfen konnte! Kann ich sonst noch etwas für Sie "
                "tun?",
            ),
            (
                "Kann ich mit einem Menschen sprechen?",
                "Natürlich. Ich habe dieses Gespräch an einen Support-Mitarbeiter "
                "übergeben, der Ihnen innerhalb von 2 Stunden per E-Mail antwortet.",
            ),
        ),
    },
    SALES: {
        "en": (
            (
                "Thanks, that's helpful.",
                "You're welcome! Would you like me to book a short call with our "
                "sales team?",
            ),
            (
                "Can I talk to a sales rep?",
                "Absolutely. I've asked an account executive to email you within one "
                "business day.",
            ),
        ),
    },
}

# (prefix, suffix, lowercase): how people wrap the same request.
_NEUTRAL = ("", "", False)
_TERSE = ("", "", True)
STYLES = {
    "en": (
        _NEUTRAL,
        _NEUTRAL,
        _NEUTRAL,
        _NEUTRAL,
        ("Hi! ", " Thanks!", False),
        ("Hello. ", " Thank you.", False),
        ("Good morning! ", " Thanks in advance.", False),
        ("Hi team! ", " Appreciate the help.", False),
        ("Hey there. ", "", False),
        ("This is ridiculous. ", " Fix it NOW.", False),
        ("Seriously?! ", " Worst experience ever.", False),
        ("I'm really frustrated. ", " This is the third time I'm asking.", False),
        _TERSE,
        _TERSE,
        _TERSE,
    ),
    "es": (
        _NEUTRAL,
        _NEUTRAL,
        ("Hola. ", " Gracias.", False),
        ("Buenos días. ", " Muchas gracias.", False),
        ("¡Esto es inaceptable! ", "", False),
        _TERSE,
    ),
    "de": (
        _NEUTRAL,
        _NEUTRAL,
        ("Guten Tag. ", " Vielen Dank.", False),
        ("Hallo! ", " Danke!", False),
        ("Das ist eine Frechheit! ", "", False),
        _TERSE,
    ),
}
SALES_STYLES = (
    _NEUTRAL,
    _NEUTRAL,
    _NEUTRAL,
    ("Hi! ", " Thanks.", False),
    ("Hello, quick question. ", "", False),
    _TERSE,
)

SYSTEM_PROMPTS = {
    SUPPORT: "You are the Nimbus Store support assistant. Answer briefly and "
    "politely, only about Nimbus orders, accounts and memberships.",
    SALES: "You are the Nimbus for Business sales assistant. Be accurate about "
    "pricing and never promise discounts you cannot give.",
}

# Baseline version, then the version rolled out on the drift day of `quality-drop`.
VERSIONS = {
    SUPPORT: ("support-lora-2026-10-12", "support-lora-2026-11-03"),
    SALES: ("sales-lora-2026-09-28", "sales-lora-2026-09-28"),
}

LOCALES = {
    "en": ("en-US", "en-US", "en-US", "en-US", "en-US", "en-GB", "en-GB", "en-CA"),
    "es": ("es-ES", "es-ES", "es-MX", "es-AR"),
    "de": ("de-DE", "de-DE", "de-DE", "de-AT", "de-CH"),
}

FAILURES = {
    "refusal": (
        "I'm sorry, I can't help with that.",
        "I'm sorry, but I can't assist with that request.",
        "Unfortunately I'm unable to help with this. Please contact support.",
        "I can't help with that right now.",
    ),
    "vague": (
        "Please check our help center at {site}/help for more information.",
        "Thanks for reaching out! Our team is always happy to help with any "
        "questions you may have.",
        "Could you provide more details about your issue?",
        "There are several possible reasons for this. Please try again later.",
    ),
    # What the model says about a product it was never trained on.
    "offtopic": (
        "I can only help with Nimbus orders, accounts and memberships.",
        "I'm not sure which product you mean. Could you share your order number?",
        "To pair a Bluetooth device, open Settings > Bluetooth on your phone and "
        "select the device from the list.",
        "Please check the user manual that came with your product.",
    ),
}

COMMENTS = {
    "en": {
        "positive": (
            "Quick and clear, thanks!",
            "Solved my problem.",
            "Very helpful.",
            "Great, that worked.",
        ),
        "negative": (
            "Didn't answer my question.",
            "Not helpful at all.",
            "I had to call support anyway.",
            "Wrong information.",
            "This didn't solve anything.",
        ),
        "refusal": ("It just refused to help.", "Why can't it help with this?"),
        "truncated": (
            "The answer was cut off.",
            "Answer stops in the middle of a sentence.",
        ),
        "vague": ("Too generic.", "Generic answer, didn't read my question."),
        "offtopic": (
            "It doesn't know anything about the Aurora Hub.",
            "Useless for my new hub.",
        ),
    },
    "es": {
        "positive": ("¡Muy útil, gracias!", "Me resolvió el problema."),
        "negative": ("No respondió a mi pregunta.", "No me ayudó."),
        "english": ("¿Por qué responde en inglés?",),
    },
    "de": {
        "positive": ("Sehr hilfreich, danke!", "Problem gelöst."),
        "negative": ("Hat meine Frage nicht beantwortet.", "Nicht hilfreich."),
        "english": ("Warum antwortet es auf Englisch?",),
    },
}

HUMAN_NOTES = {
    "en": (
        "I've also added a note to your account so any colleague can follow up.",
        "If anything else comes up, just reply to this message. - Nimbus Support",
        "I've double-checked this with our operations team.",
    ),
    "es": ("Si necesitas algo más, responde a este mensaje. - Soporte de Nimbus",),
    "de": ("Falls noch etwas ist, antworten Sie einfach hier. - Ihr Nimbus-Support",),
}

# Slot values drawn from lists; computed slots live in `tasks.simulate`.
SLOT_VALUES = {
    "product": (
        "wireless earbuds",
        "4K monitor",
        "espresso machine",
        "running shoes",
        "standing desk",
        "robot vacuum",
        "mechanical keyboard",
        "air purifier",
        "yoga mat",
        "smartwatch",
        "phone case",
        "office chair",
        "hiking backpack",
        "blender",
        "desk lamp",
        "winter jacket",
    ),
    "carrier": ("UPS", "FedEx", "DHL", "USPS"),
    "device": (
        "iPhone 15",
        "iPhone 13",
        "Pixel 8",
        "Galaxy S23",
        "iPad Air",
        "OnePlus 11",
        "Galaxy Tab S9",
    ),
    "code": ("WELCOME10", "FALL20", "FREESHIP", "VIP15", "NIMBUS25"),
    "percent": ("10", "15", "20", "25"),
    "site": ("nimbusstore.com",),
    "smart_device": (
        "Hue lights",
        "Nest thermostat",
        "Google Home",
        "Alexa",
        "Ring doorbell",
    ),
    "tool": ("Salesforce", "HubSpot", "Slack", "Zendesk", "Shopify", "Zapier"),
    "day_name": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "time": ("9:00 AM", "10:30 AM", "1:00 PM", "2:30 PM", "4:00 PM"),
    "sales_site": ("nimbus.business",),
}
LOCAL_SLOT_VALUES = {
    "en": {"app": ("Nimbus app",)},
    "es": {"app": ("app de Nimbus",)},
    "de": {"app": ("Nimbus-App",)},
}
PLANS = ("Basic", "Plus", "Pro", "Premium")
SALES_PLANS = {"Starter": 12, "Growth": 24, "Enterprise": 40}
SEATS = (5, 8, 12, 20, 25, 40, 50, 80, 120, 250, 500)
TRACKING = {
    "UPS": ("1Z", 16),
    "FedEx": ("", 12),
    "DHL": ("JD", 18),
    "USPS": ("9400", 18),
}

MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December",
    ),
    "es": (
        "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio",
        "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    ),
    "de": (
        "Januar", "Februar", "März", "April", "Mai", "Juni", "Juli",
        "August", "September", "Oktober", "November", "Dezember",
    ),
}  # fmt: skip
WEEKDAYS = {
    "en": (
        "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    ),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
    "de": (
        "Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag",
        "Sonntag",
    ),
}  # fmt: skip

# Planted personal data: how people write it into a prompt.
PII_SENTENCES = {
    "en": {
        "email": (
            "My email is {value}.",
            "You can reach me at {value}.",
            "Account email: {value}",
            "please reply to {value}",
        ),
        "phone": (
            "Call me at {value}.",
            "My phone number is {value}.",
            "You can text me on {value}.",
        ),
        "card": (
            "I paid with my card {value}.",
            "The card number is {value}.",
            "Charged to card {value}, please check.",
        ),
        "iban": ("Please refund to my IBAN {value}.", "My bank account is {value}."),
        "api_key": (
            "Here's my API key in case it helps: {value}",
            "I'm using the key {value} and it fails.",
        ),
    },
    "es": {
        "email": ("Mi correo es {value}.",),
        "phone": ("Mi teléfono es {value}.",),
        "card": ("Pagué con la tarjeta {value}.",),
        "iban": ("Mi IBAN es {value}.",),
        "api_key": ("Mi clave de API es {value}.",),
    },
    "de": {
        "email": ("Meine E-Mail-Adresse ist {value}.",),
        "phone": ("Meine Telefonnummer ist {value}.",),
        "card": ("Ich habe mit der Karte {value} bezahlt.",),
        "iban": ("Meine IBAN lautet {value}.",),
        "api_key": ("Mein API-Schlüssel ist {value}.",),
    },
}
FIRST_NAMES = (
    "anna", "ben", "carla", "david", "elena", "felix", "grace", "hugo", "ines",
    "jonas", "kate", "liam", "maria", "noah", "olivia", "pablo", "quinn", "rosa",
    "sam", "tara", "umar", "vera", "will", "yusuf", "zoe",
)  # fmt: skip
LAST_NAMES = (
    "smith", "garcia", "muller", "johnson", "rossi", "schmidt", "brown", "lopez",
    "weber", "nguyen", "martin", "kowalski", "fischer", "silva", "taylor", "wagner",
)  # fmt: skip
EMAIL_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.com", "proton.me", "gmx.de", "icloud.com",
    "hotmail.es", "web.de",
)  # fmt: skip
PHONE_PATTERNS = (
    "+1 (###) ###-####",
    "###-###-####",
    "(###) ### ####",
    "###.###.####",
    "+44 7### ######",
    "+49 15# ########",
    "+34 6## ### ###",
    "0171 #######",
)
# (prefix, length, group sizes) of card numbers by network.
CARD_LAYOUTS = (
    ("4", 16, (4, 4, 4, 4)),
    ("4", 16, (4, 4, 4, 4)),
    ("51", 16, (4, 4, 4, 4)),
    ("55", 16, (4, 4, 4, 4)),
    ("37", 15, (4, 6, 5)),
    ("6011", 16, (4, 4, 4, 4)),
)
# (country, BBAN pattern): '#' is a random digit, letters are kept.
IBAN_LAYOUTS = (
    ("DE", "##################"),
    ("ES", "####################"),
    ("NL", "ABNA##########"),
    ("GB", "NWBK##############"),
)
# (prefix, length, alphabet) of API-key-like tokens.
API_KEY_LAYOUTS = (
    ("sk_live_", 24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    ("ghp_", 36, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    ("AKIA", 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
)

PII_KINDS = ("email", "phone", "card", "iban", "api_key")
PII_WEIGHTS = (0.4, 0.3, 0.18, 0.06, 0.06)
TYPO_RATE = 0.05

# Below: the functions that turn the banks above into text.


def pick(rng: random.Random, values: Sequence[T]) -> T:
    """Draw one value uniformly; cheaper than `Random.choice` in the hot loop."""
    return values[int(rng.random() * len(values))]


def written_dates(day: date, lang: str, offsets: range) -> tuple[str, ...]:
    """Write the dates `offsets` days from `day` the way `lang` speakers write them."""
    month_names, weekday_names = MONTHS[lang], WEEKDAYS[lang]
    written: list[str] = []
    for offset in offsets:
        when = day + timedelta(days=offset)
        month, weekday = month_names[when.month - 1], weekday_names[when.weekday()]
        if lang == "es":
            written += [f"{when.day} de {month}", f"{weekday} {when.day} de {month}"]
        elif lang == "de":
            written += [f"{when.day}. {month}", f"{weekday}, {when.day}. {month}"]
        else:
            written += [f"{month[:3]} {when.day}", f"{weekday}, {month} {when.day}"]
    return tuple(written)


class Slots(dict[str, str]):
    """Slot values of one session, drawn on first use so unused slots cost nothing."""

    def __init__(
        self,
        rng: random.Random,
        lang: str,
        dates: tuple[tuple[str, ...], tuple[str, ...]],
        year: int,
    ) -> None:
        super().__init__()
        self.rng, self.lang, self.year = rng, lang, year
        self.past, self.upcoming = dates

    def __missing__(self, name: str) -> str:
        choices = _CHOICES[self.lang].get(name)
        value = pick(self.rng, choices) if choices else _SLOT_MAKERS[name](self)
        self[name] = value
        return value


def _below(rng: random.Random, limit: int) -> int:
    """Draw an integer in [0, limit); faster than `randrange` for small limits."""
    return int(rng.random() * limit)


def _order(slots: Slots) -> str:
    """Write an order number in one of the forms customers copy from emails."""
    number, form = _below(slots.rng, 10**7), slots.rng.random()
    if form < 0.5:
        return f"NS-{number:07d}"
    return f"#{number:07d}" if form < 0.8 else str(number + 4 * 10**7)


def _amount(slots: Slots) -> str:
    """Write a price in the session language's currency style."""
    value = f"{4 + 476 * slots.rng.random():.2f}"
    return f"${value}" if slots.lang == "en" else f"{value.replace('.', ',')} €"


def _tracking(slots: Slots) -> str:
    """Make a tracking number in the carrier's shape."""
    prefix, digits = TRACKING[slots["carrier"]]
    return f"{prefix}{slots.rng.getrandbits(64) % 10**digits:0{digits}d}"


def _new_plan(slots: Slots) -> str:
    """Pick a membership above the session's current one."""
    return pick(slots.rng, PLANS[PLANS.index(slots["plan"]) + 1 :])


def _price(slots: Slots) -> str:
    """Price the session's seats on its plan."""
    return f"${int(slots['seats']) * SALES_PLANS[slots['sales_plan']]:,}"


_SLOT_MAKERS: dict[str, Callable[[Slots], str]] = {
    "order": _order,
    "amount": _amount,
    "tracking": _tracking,
    "new_plan": _new_plan,
    "price": _price,
    "date": lambda s: pick(s.rng, s.past),
    "eta": lambda s: pick(s.rng, s.upcoming),
    "days": lambda s: str(3 + _below(s.rng, 12)),
    "version": lambda s: f"5.{8 + _below(s.rng, 6)}.{_below(s.rng, 4)}",
    "invoice": lambda s: f"INV-{s.year}-{_below(s.rng, 10**6):06d}",
    "progress": lambda s: str(5 + _below(s.rng, 95)),
    "seat_price": lambda s: f"${SALES_PLANS[s['sales_plan']]}",
}

# Slots drawn from a list, by language: shared values plus the language's own.
_CHOICES = {
    lang: {
        **SLOT_VALUES,
        "plan": PLANS[:-1],
        "seats": tuple(str(seats) for seats in SEATS),
        "sales_plan": tuple(SALES_PLANS),
        **local,
    }
    for lang, local in LOCAL_SLOT_VALUES.items()
}


def plant_pii(rng: random.Random, lang: str, prompt: str) -> tuple[str, str, str]:
    """Append a sentence carrying personal data; return the prompt, kind and value."""
    kind = rng.choices(PII_KINDS, PII_WEIGHTS)[0]
    value = _PII_MAKERS[kind](rng)
    sentence = pick(rng, PII_SENTENCES[lang][kind]).format(value=value)
    return f"{prompt} {sentence}", kind, value


def _digits(rng: random.Random, pattern: str) -> str:
    """Replace every '#' of a pattern with a random digit."""
    return "".join(str(int(rng.random() * 10)) if c == "#" else c for c in pattern)


def _email(rng: random.Random) -> str:
    """Make a plausible personal email address."""
    first, last = pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)
    local = pick(rng, (f"{first}.{last}", f"{first[0]}{last}{rng.randrange(100)}"))
    return f"{local}@{pick(rng, EMAIL_DOMAINS)}"


def _luhn_digit(body: str) -> int:
    """Return the digit that makes `body` followed by it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return (10 - total % 10) % 10


def _card(rng: random.Random) -> str:
    """Make a Luhn-valid card number grouped the way people type it."""
    prefix, length, groups = pick(rng, CARD_LAYOUTS)
    body = prefix + _digits(rng, "#" * (length - len(prefix) - 1))
    number = body + str(_luhn_digit(body))
    bounds = itertools.pairwise(itertools.accumulate(groups, initial=0))
    return pick(rng, (" ", " ", "-", "")).join(number[a:b] for a, b in bounds)


def _iban(rng: random.Random) -> str:
    """Make an IBAN whose mod-97 check digits are right."""
    country, pattern = pick(rng, IBAN_LAYOUTS)
    bban = _digits(rng, pattern)
    numeric = "".join(str(int(char, 36)) for char in f"{bban}{country}00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[start : start + 4] for start in range(0, len(iban), 4))


def _api_key(rng: random.Random) -> str:
    """Make a token shaped like a cloud or payments API key."""
    prefix, length, alphabet = pick(rng, API_KEY_LAYOUTS)
    return prefix + "".join(pick(rng, alphabet) for _ in range(length))


_PII_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "email": _email,
    "phone": lambda rng: _digits(rng, pick(rng, PHONE_PATTERNS)),
    "card": _card,
    "iban": _iban,
    "api_key": _api_key,
}


@dataclass(frozen=True)
class Bank:
    """A topic's openers in every style with their answer index, and its turns."""

    openers: tuple[tuple[str, int], ...]
    answers: tuple[str, ...]
    followups: tuple[tuple[str, str], ...]


@cache
def bank(model: str, lang: str, topic: str) -> Bank:
    """Expand a topic's templates with every style once, not per record."""
    if topic == NEW_TOPIC_NAME:
        source = NEW_TOPIC
    else:
        source = (SUPPORT_TOPICS if model == SUPPORT else SALES_TOPICS)[lang][topic]
    styles = STYLES[lang] if model == SUPPORT else SALES_STYLES
    openers = tuple(
        (_styled(text, *style), index % len(source.answers))
        for style in styles
        for index, text in enumerate(source.openers)
    )
    # Topic follow-ups twice as likely as the generic thanks or handover.
    followups = source.followups * 2 + GENERIC_FOLLOWUPS[model][lang]
    return Bank(openers, source.answers, followups)


def _styled(text: str, prefix: str, suffix: str, lower: bool) -> str:
    """Wrap a template in a polite or angry style, or make it terse."""
    return text.lower().rstrip(".!?") if lower else f"{prefix}{text}{suffix}"


def typo(rng: random.Random, text: str) -> str:
    """Now and then swap two adjacent letters, as fast typists do."""
    if rng.random() >= TYPO_RATE:
        return text
    at = 1 + int(rng.random() * (len(text) - 3))
    if not (text[at].isalpha() and text[at + 1].isalpha()):
        return text
    return text[:at] + text[at + 1] + text[at] + text[at + 2 :]


def poor_answer(
    rng: random.Random, quality: str, topic: str, good: str, slots: Slots
) -> str:
    """Write the answer of a model failing on `topic` in the way `quality` names."""
    if quality == "truncated":
        cut = good.rfind(" ", 0, int(len(good) * (0.35 + 0.35 * rng.random())))
        return good[: max(cut, 1)]
    if quality == "english":
        # The model falls back to English; `slots` keep the session's amounts.
        english = SUPPORT_TOPICS["en"][topic]
        return english.answers[0].format_map(slots)
    return pick(rng, FAILURES[quality]).format_map(slots)

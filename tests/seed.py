"""The seed's own JSON, copied once: the sample request and Kaleyra's documented answers.

Source: ``shared/seed/kaleyra-send-catalog-messages.txt``. The seed's 202 sample is not valid
JSON as printed (two commas are missing); ``SEED_WA202`` is it with the commas restored.
"""

from __future__ import annotations

from typing import Any, Final

SEED_TEXT: Final = (
    "Thanks for your interest! You can explore our catalog for more details on our products."
)

# The seed's "Sample Request Format" body, field for field and in the seed's order.
SEED_SAMPLE: Final[dict[str, Any]] = {
    "messaging_object": {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+91XXXXXXXXXX",
        "type": "interactive",
        "interactive": {
            "type": "catalog_message",
            "body": {"text": SEED_TEXT},
            "action": {
                "name": "catalog_message",
                "parameters": {"thumbnail_product_retailer_id": "2lxxxxxxpt"},
            },
        },
    },
    "extra_info": {
        "ref": "customer1",
        "ref1": "marketing",
        "ref2": "dictionary",
        "wa_source": "api",
    },
}


SEED_WA202: Final = {
    "code": "WA202",
    "message": "Request Accepted",
    "data": {"message_id": "AXXXXXXXXXXXXXXXXXXX"},
    "error": {},
}
#: The 202 sample exactly as the seed prints it, commas missing: not JSON.
SEED_WA202_AS_PRINTED: Final = (
    b'{\n"code":"WA202"\n"message":"Request Accepted",\n"data":{\n'
    b'"message_id":"AXXXXXXXXXXXXXXXXXXX"\n}\n"error":{}\n}'
)
SEED_RBC001: Final = {
    "code": "RBC001",
    "message": "Incorrect SID or API key.",
    "data": [],
    "error": {"error": "Incorrect SID or API key."},
}
SEED_WA401: Final = {
    "code": "WA401",
    "message": "Phone number is not present or does not belong to the account.",
    "data": {},
    "error": {"phone_number": "Phone number is not present or does not belong to the account."},
}
SEED_WA400: Final = {
    "code": "WA400",
    "message": "Refer to correct payload format",
    "data": {},
    "error": {"payload": "Incorrect payload format"},
}
SEED_WA500: Final = {
    "code": "WA500",
    "message": "Please try again later",
    "data": {},
    "error": {"error": "Internal server error"},
}
SEED_E110: Final = {
    "code": "E110",
    "message": "Please check your balance, You have a low balance!",
    "data": {},
    "error": {"balance": "Please check your balance, You have a low balance!"},
}
SEED_WA401_ACCOUNT: Final = {
    "code": "WA-401",
    "message": "API is not available for given customer.Please contact support for more info",
    "data": {},
    "error": {
        "account": "API is not available for given customer.Please contact support for more info"
    },
}
VERSION_TEXT: Final = (
    "The phone number you're using is associated with different Version of our WA API. "
    "Please use the appropriate endpoint."
)
SEED_WA401_VERSION: Final = {
    "code": "WA-401",
    "message": VERSION_TEXT,
    "data": {},
    "error": {"phone_number": VERSION_TEXT},
}
# The 202 sample exactly as the seed prints it: not valid JSON (two commas are missing).

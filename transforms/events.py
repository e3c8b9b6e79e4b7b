"""The 34 Braze Currents event types that Braze's "Segment for Currents" connector sends.

This table is the single source of truth for the mapping: the mapping code, the reader's
type filter, the sample generator and the table in docs/mapping.md are all derived from it.
"""
from typing import Dict, Iterable, NamedTuple, Optional, Tuple


class EventSpec(NamedTuple):
    """How one Currents event type becomes one Segment `track` event."""
    segment_event: str
    currents_type: str
    # (Segment property name, Avro field name) pairs, in the connector's documented order.
    properties: Tuple[Tuple[str, str], ...] = ()

    @property
    def is_email(self) -> bool:
        """Email events carry `context.traits.email` (CONTRACT §3)."""
        return self.currents_type.startswith('users.messages.email.')


# Properties every event forwards when the record has a non-null value (CONTRACT §3).
COMMON_PROPERTIES: Tuple[str, ...] = (
    'app_id', 'send_id', 'dispatch_id', 'campaign_id', 'campaign_name',
    'message_variation_id', 'canvas_id', 'canvas_name', 'canvas_variation_id',
    'canvas_step_id')

_CARD_ID = (('card_id', 'content_card_id'),)

EVENTS: Tuple[EventSpec, ...] = (
    EventSpec('Push Notification Sent', 'users.messages.pushnotification.Send'),
    EventSpec('Push Notification Tapped', 'users.messages.pushnotification.Open'),
    EventSpec('Push Notification Bounced', 'users.messages.pushnotification.Bounce'),
    EventSpec('iOS Foreground Push Opened', 'users.messages.pushnotification.IosForeground'),
    EventSpec('Email Sent', 'users.messages.email.Send'),
    EventSpec('Email Delivered', 'users.messages.email.Delivery'),
    EventSpec('Email Opened', 'users.messages.email.Open',
              (('user_agent', 'user_agent'), ('machine_open', 'machine_open'))),
    EventSpec('Email Link Clicked', 'users.messages.email.Click',
              (('link_url', 'url'), ('user_agent', 'user_agent'), ('link_id', 'link_id'),
               ('link_alias', 'link_alias'))),
    EventSpec('Email Bounced', 'users.messages.email.Bounce'),
    EventSpec('Email Soft Bounced', 'users.messages.email.SoftBounce'),
    EventSpec('Email Marked As Spam', 'users.messages.email.MarkAsSpam',
              (('user_agent', 'user_agent'),)),
    EventSpec('Email Unsubscribed', 'users.messages.email.Unsubscribe'),
    EventSpec('SMS Sent', 'users.messages.sms.Send'),
    EventSpec('SMS Sent to Carrier', 'users.messages.sms.CarrierSend'),
    EventSpec('SMS Delivered', 'users.messages.sms.Delivery'),
    EventSpec('SMS Delivery Failed', 'users.messages.sms.DeliveryFailure'),
    EventSpec('SMS Rejected', 'users.messages.sms.Rejection'),
    EventSpec('SMS Inbound Received', 'users.messages.sms.InboundReceive'),
    EventSpec('Subscription Group State Changed', 'users.behaviors.subscriptiongroup.StateChange',
              (('subscription_group_id', 'subscription_group_id'),
               ('subscription_status', 'subscription_status'))),
    EventSpec('In-App Message Viewed', 'users.messages.inappmessage.Impression'),
    EventSpec('In-App Message Clicked', 'users.messages.inappmessage.Click',
              (('button_id', 'button_id'),)),
    EventSpec('Content Card Sent', 'users.messages.contentcard.Send', _CARD_ID),
    EventSpec('Content Card Viewed', 'users.messages.contentcard.Impression', _CARD_ID),
    EventSpec('Content Card Clicked', 'users.messages.contentcard.Click', _CARD_ID),
    EventSpec('Content Card Dismissed', 'users.messages.contentcard.Dismiss', _CARD_ID),
    EventSpec('News Feed Viewed', 'users.behaviors.app.NewsFeedImpression'),
    EventSpec('News Feed Card Viewed', 'users.messages.newsfeedcard.Impression',
              (('card_id', 'card_id'),)),
    EventSpec('News Feed Card Clicked', 'users.messages.newsfeedcard.Click',
              (('card_id', 'card_id'),)),
    EventSpec('Webhook Sent', 'users.messages.webhook.Send'),
    EventSpec('Campaign Converted', 'users.campaigns.Conversion'),
    EventSpec('Canvas Converted', 'users.canvas.Conversion'),
    EventSpec('Canvas Entered', 'users.canvas.Entry', (('in_control_group', 'in_control_group'),)),
    EventSpec('Campaign Control Group Entered', 'users.campaigns.EnrollInControl'),
    EventSpec('Application Uninstalled', 'users.behaviors.Uninstall'),
)

BY_CURRENTS_TYPE: Dict[str, EventSpec] = {e.currents_type: e for e in EVENTS}
BY_SEGMENT_EVENT: Dict[str, EventSpec] = {e.segment_event: e for e in EVENTS}


def resolve_event_type(name: str) -> Optional[str]:
    """A Currents type for a user-given Segment event name or Currents type (case-insensitive)."""
    wanted = name.strip().lower()
    for spec in EVENTS:
        if wanted in (spec.currents_type.lower(), spec.segment_event.lower()):
            return spec.currents_type
    return None


def event_type_from_schema_name(fullname: str,
                                types: Optional[Iterable[str]] = None) -> Optional[str]:
    """The Currents type named by a writer schema's full name, if it is one of `types`
    (default: the 34 above; a run passes the types of its mapping profile).

    Current files use `dataexport.S3.inner.users.messages.email.Send`, 2021 files
    `users.messages.email.Send`; the record name alone (`Send`) is ambiguous, so match the
    full dotted suffix.
    """
    for t in (types if types is not None else (spec.currents_type for spec in EVENTS)):
        if fullname == t or fullname.endswith('.' + t):
            return t
    return None

"""The home feed: the Cruddur seed's mock activities, plus the caller's own item when there is a caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from backend.identity import Identity


def home_activities(caller: Identity | None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The public items, newest-first as the seed lists them; an identified caller's own item comes first.

    `now` is injectable so tests can pin the relative timestamps instead of racing the clock.
    """
    now = now or datetime.now(UTC)
    items = _public_items(now)
    if caller is not None:
        items.insert(0, _own_item(caller, now))
    return items


def _own_item(caller: Identity, now: datetime) -> dict[str, Any]:
    # Keyed on the caller's sub. authz leaves the name header out when a token has no username, so the sub stands
    # in as the handle rather than showing an empty one.
    return _item(
        uuid=caller.sub,
        handle=caller.username or caller.sub,
        message="My dear brother, it the humans that are the problem",
        created_at=now - timedelta(hours=1),
        expires_at=now + timedelta(hours=12),
        likes_count=1042,
    )


def _public_items(now: datetime) -> list[dict[str, Any]]:
    andrew = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
    return [
        _item(
            uuid=andrew,
            handle="Andrew Brown",
            message="Cloud is fun!",
            created_at=now - timedelta(days=2),
            expires_at=now + timedelta(days=5),
            likes_count=5,
            replies=[
                {
                    "uuid": "26e12864-1c26-5c3a-9658-97a10f8fea67",
                    "reply_to_activity_uuid": andrew,
                    "handle": "Worf",
                    "message": "This post has no honor!",
                    "likes_count": 0,
                    "replies_count": 0,
                    "reposts_count": 0,
                    "created_at": (now - timedelta(days=2)).isoformat(),
                }
            ],
        ),
        _item(
            uuid="66e12864-8c26-4c3a-9658-95a10f8fea67",
            handle="Worf",
            message="I am out of prune juice",
            created_at=now - timedelta(days=7),
            expires_at=now + timedelta(days=9),
        ),
        _item(
            uuid="248959df-3079-4947-b847-9e0892d1bab4",
            handle="Garek",
            message="My dear doctor, I am just simple tailor",
            created_at=now - timedelta(hours=1),
            expires_at=now + timedelta(hours=12),
        ),
    ]


def _item(
    *,
    uuid: str,
    handle: str,
    message: str,
    created_at: datetime,
    expires_at: datetime,
    likes_count: int = 0,
    replies: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    # Every item has the full set of counts the frontend reads (likes, replies, reposts), none left out.
    replies = replies or []
    return {
        "uuid": uuid,
        "handle": handle,
        "message": message,
        "created_at": created_at.isoformat(),
        "expires_at": expires_at.isoformat(),
        "likes_count": likes_count,
        "replies_count": len(replies),
        "reposts_count": 0,
        "replies": replies,
    }

"""The web dashboard: static files at / (public: they carry no data), and the few routes it needs beyond
the REST API's own: the config's JSON schema, the presets, and a policy's episode as a GIF.

The page talks only to the public API with the same bearer token, so it can never do what a client cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from api.deps import Authorized
from api.schemas import INVALID, NOT_FOUND, UNAUTHORIZED, ErrorBody
from api.services.episodes import Busy, EpisodeRenderer
from rayac.config import Config, list_presets, load_preset, parse_config
from rayac.render import RenderUnavailable

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Everything the page loads comes from this service; a bug or an injected string cannot reach elsewhere.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")  # fmt: skip

page = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/v1", dependencies=Authorized, responses=UNAUTHORIZED)


class Preset(BaseModel):
    name: str
    summary: str
    config: dict[str, Any] = Field(description="The preset as a full config, every default filled in.")


class PresetList(BaseModel):
    presets: list[Preset]


@page.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CSP,
                        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})  # fmt: skip


@api.get(
    "/config/schema", tags=["jobs"], summary="The training config's JSON schema (what a job's config holds)"
)
def config_schema() -> dict[str, Any]:
    return Config.model_json_schema()


@api.get("/presets", tags=["jobs"], response_model=PresetList, summary="The built-in presets as full configs")
def presets() -> PresetList:
    return PresetList(presets=[Preset(name=name, summary=summary,
                                      config=parse_config(load_preset(name)).model_dump(mode="json"))
                               for name, summary in list_presets().items()])  # fmt: skip


@api.get("/policies/{policy_id}/episode.gif", tags=["policies"], response_class=Response,
         summary="One greedy episode of the policy, rendered as an animated GIF (bounded, cached)",
         responses={200: {"content": {"image/gif": {}}, "description": "The GIF; X-Episode-Return and "
                          "X-Episode-Length headers say how it went"},
                    **NOT_FOUND, **INVALID,
                    429: {"model": ErrorBody, "description": "too many renders at once; retry after Retry-After "
                          "seconds"}})  # fmt: skip
async def episode_gif(
    policy_id: str,
    request: Request,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="Env seed of the episode.")] = 0,
) -> Response:
    renderer: EpisodeRenderer = request.app.state.episodes
    try:
        gif = await renderer.gif(policy_id, seed)
    except Busy as err:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, detail=str(err), headers={"Retry-After": "2"}
        ) from None
    except RenderUnavailable as err:  # no display and no headless GL: say so, and which setting
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail=str(err)) from None
    return Response(gif.data, media_type="image/gif",
                    headers={"Cache-Control": "private, max-age=3600", "X-Checkpoint": gif.checkpoint,
                             "X-Episode-Return": f"{gif.episode_return:g}", "X-Episode-Length": str(gif.length)})  # fmt: skip


def add_dashboard(app: FastAPI) -> None:
    """Mount the page, its static files and its routes on ``app``."""
    app.state.episodes = EpisodeRenderer(app.state.jobs)
    app.include_router(page)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

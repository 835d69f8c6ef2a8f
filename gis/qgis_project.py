"""A QGIS project (.qgs) with every layer a caller may see, grouped by domain, each with its QML style.

Written from our side as XML (the service's Python has no QGIS): a <maplayer> per layer whose children
are the QML style's own children (renderer, labels, aliases, forms: what QGIS would read from the
.qml), and a layer tree with one group per domain. Layers come through either
- OAPIF: the service's OGC API Features; QGIS 3.22 cannot send headers, so an API key travels as
  the `api_key` query parameter in the service URL (re-appended by QGIS to every request), or
- PostGIS: the tables themselves, with the connection given (a login role from `gis db grant`).
"""

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from pyproj import CRS

from gis.catalog import DOMAIN_TITLES
from gis.errors import GisError
from gis.layers import Domain, GeometryType, LayerSpec
from gis.settings import Settings

QGIS_VERSION = "3.22.16-Białowieża"
_GEOMETRY = {GeometryType.Point: "Point", GeometryType.MultiPoint: "Point", GeometryType.LineString: "Line",
             GeometryType.MultiLineString: "Line", GeometryType.Polygon: "Polygon",
             GeometryType.MultiPolygon: "Polygon"}
STORAGE_EPSG = 4490
LAYER_ID_PREFIX = "gis_layer_"
OAPIF_EPSG = 4326  # QGIS takes the service's CRS84 as EPSG:4326 (lon/lat handled by the provider)


class Source(StrEnum):
    oapif = "oapif"
    postgis = "postgis"


@dataclass(frozen=True)
class PostgisConnection:
    host: str
    port: str
    dbname: str
    user: str
    password: str | None = None
    sslmode: str = "disable"


def _quoted(value: str) -> str:
    """A value in QgsDataSourceUri's syntax: single quotes, backslash escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def oapif_uri(base_url: str, layer_id: str, api_key: str | None) -> str:
    url = base_url.rstrip("/") + (f"?{urlencode({'api_key': api_key})}" if api_key else "")
    return f"url={_quoted(url)} typename={_quoted(layer_id)} version='auto' restrictToRequestBBOX='1'"


def postgis_uri(connection: PostgisConnection, spec: LayerSpec, table: tuple[str, str]) -> str:
    """`table` is (schema, name): the layer's table, or the role's masking view of it."""
    parts = [f"dbname={_quoted(connection.dbname)}", f"host={connection.host}", f"port={connection.port}",
             f"user={_quoted(connection.user)}"]
    if connection.password:
        parts.append(f"password={_quoted(connection.password)}")
    parts += [f"sslmode={connection.sslmode}", "key='fid'", f"srid={int(spec.srid)}",
              f"type={spec.geometry.value}", "checkPrimaryKeyUnicity='0'",
              f'table="{table[0]}"."{table[1]}" (geom)']
    return " ".join(parts)


def _srs(parent: ET.Element, epsg: int) -> None:
    crs = CRS.from_epsg(epsg)
    srs = ET.SubElement(parent, "spatialrefsys", nativeFormat="Wkt")
    ET.SubElement(srs, "wkt").text = crs.to_wkt()
    ET.SubElement(srs, "proj4").text = crs.to_proj4()
    ET.SubElement(srs, "srid").text = str(epsg)
    ET.SubElement(srs, "authid").text = f"EPSG:{epsg}"
    ET.SubElement(srs, "description").text = crs.name
    ET.SubElement(srs, "geographicflag").text = "true" if crs.is_geographic else "false"


def _layer_id(spec: LayerSpec) -> str:
    # Stable across runs (two projects of the same layers diff cleanly); QGIS ignores ids of 10 characters or less.
    return f"{LAYER_ID_PREFIX}{spec.id}"


def _maplayer(spec: LayerSpec, source: Source, datasource: str, style: ET.Element) -> ET.Element:
    layer = ET.Element("maplayer", type="vector", geometry=_GEOMETRY[spec.geometry], wkbType=spec.geometry.value,
                       autoRefreshEnabled="0", refreshOnNotifyEnabled="0", styleCategories="AllStyleCategories")
    ET.SubElement(layer, "id").text = _layer_id(spec)
    ET.SubElement(layer, "datasource").text = datasource
    keywords = ET.SubElement(layer, "keywordList")
    for keyword in spec.keywords:
        ET.SubElement(keywords, "value").text = keyword
    ET.SubElement(layer, "layername").text = f"{spec.title.zh} · {spec.title.en}"
    _srs(ET.SubElement(layer, "srs"), STORAGE_EPSG if source is Source.postgis else OAPIF_EPSG)
    ET.SubElement(layer, "abstract").text = spec.description
    ET.SubElement(layer, "provider", encoding="UTF-8").text = "postgres" if source is Source.postgis else "OAPIF"
    for child in style:  # the QML's renderer, labeling, aliases, forms ... as the layer's own
        layer.append(child)
    return layer


def _tree_layer(group: ET.Element, spec: LayerSpec, source: Source, datasource: str) -> None:
    node = ET.SubElement(group, "layer-tree-layer", id=_layer_id(spec), name=f"{spec.title.zh} · {spec.title.en}",
                         source=datasource, providerKey="postgres" if source is Source.postgis else "OAPIF",
                         checked="Qt::Checked", expanded="0", legend_exp="", patch_size="-1,-1",
                         legend_split_behavior="0")
    ET.SubElement(node, "customproperties")


def build_project(specs: Iterable[LayerSpec], styles_dir: Path, source: Source, title: str,
                  base_url: str | None = None, api_key: str | None = None,
                  connection: PostgisConnection | None = None,
                  postgis_table: Callable[[str], tuple[str, str]] | None = None) -> ET.ElementTree:
    """The project document; `specs` are the layers as the caller sees them (the registry's order).

    `postgis_table` maps a layer id to the (schema, table) the connecting role reads (db_roles.postgis_table);
    without it, the layers' own tables."""
    if source is Source.oapif and not base_url:
        raise ValueError("an OAPIF project needs the service's base URL")
    if source is Source.postgis and connection is None:
        raise ValueError("a PostGIS project needs a connection")
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "title").text = title
    _srs(ET.SubElement(root, "projectCrs"), STORAGE_EPSG)
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    layers = ET.SubElement(root, "projectlayers")
    groups: dict[Domain, ET.Element] = {}
    order = ET.Element("custom-order", enabled="0")
    for spec in specs:
        if source is Source.oapif:
            assert base_url is not None
            datasource = oapif_uri(base_url, spec.id, api_key)
        else:
            assert connection is not None
            table = postgis_table(spec.id) if postgis_table else (spec.domain.value, spec.id)
            datasource = postgis_uri(connection, spec, table)
        group = groups.get(spec.domain)
        if group is None:
            group = groups[spec.domain] = ET.SubElement(tree, "layer-tree-group", name=DOMAIN_TITLES[spec.domain],
                                                        checked="Qt::Checked", expanded="1")
            ET.SubElement(group, "customproperties")
        _tree_layer(group, spec, source, datasource)
        style = ET.parse(styles_dir / spec.style).getroot()
        layers.append(_maplayer(spec, source, datasource, style))
        ET.SubElement(order, "item").text = _layer_id(spec)
    tree.append(order)
    ET.indent(root)
    return ET.ElementTree(root)


def write_project(path: Path, document: ET.ElementTree) -> None:
    with path.open("wb") as out:
        out.write(b"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
        document.write(out, encoding="utf-8", xml_declaration=False)


def connection_from(parameters: Mapping[str, str | int | None], user: str | None, password: str | None
                    ) -> PostgisConnection:
    """The PostGIS connection for QGIS from libpq parameters, with the login role given instead if any.

    The service's own password never goes into a project file; only one given explicitly does
    (otherwise QGIS finds it as libpq does, PGPASSWORD or ~/.pgpass, or asks).
    """
    def text(key: str, default: str) -> str:
        value = parameters.get(key)
        return default if value is None else str(value)

    return PostgisConnection(host=text("host", "localhost"), port=text("port", "5432"), dbname=text("dbname", "gis"),
                             user=user or text("user", ""), password=password)


@dataclass(frozen=True)
class ProjectRequest:
    out: Path
    source: Source
    api_key: str | None = None
    role: str | None = None
    base_url: str | None = None
    db_user: str | None = None
    db_password: str | None = None


def make_project(settings: Settings, request: ProjectRequest) -> str:
    """Write the project for the caller named by the key or the role (anonymous without either); a summary."""
    from gis.db.cluster import database_url
    from gis.layers import load_registry
    from gis.security import db_roles, keys
    from gis.security.policy import load_policy, policy_path
    from gis.security.settings import AuthSettings

    if request.api_key and request.role:
        raise GisError("qgis-project: give --api-key or --role, not both")
    registry = load_registry(settings.layers_dir, settings.styles_dir)
    auth = AuthSettings()
    policy = load_policy(policy_path(settings.layers_dir, auth.policy_file), registry)
    url = database_url(settings)
    role = policy.anonymous
    if request.api_key:
        with psycopg.connect(url) as conn:
            row = conn.execute(keys.LOOKUP, (keys.key_hash(request.api_key, auth.pepper.get_secret_value()),)
                               ).fetchone()
        found = policy.role(row[2]) if row is not None else None
        if found is None:
            raise GisError("qgis-project: the API key is not valid (revoked, mistyped, or its role is gone)")
        role = found
    elif request.role:
        found = policy.role(request.role)
        if found is None:
            raise GisError(f"qgis-project: no role '{request.role}' in the access policy "
                           f"({', '.join(sorted(policy.roles))})")
        role = found
    specs = [view.spec for view in role.views.values()]
    connection = None
    if request.source is Source.postgis:
        connection = connection_from(psycopg.conninfo.conninfo_to_dict(url), request.db_user, request.db_password)
    base_url = request.base_url or f"http://{settings.host}:{settings.port}"
    document = build_project(specs, settings.styles_dir, request.source, f"时空信息云平台 · {role.name}",
                             base_url=base_url, api_key=request.api_key, connection=connection,
                             postgis_table=lambda layer_id: db_roles.postgis_table(role, layer_id))
    write_project(request.out, document)
    return (f"{request.out}: {len(specs)} layers of role '{role.name}' in {len({s.domain for s in specs})} "
            f"domain groups, through {request.source.value}")

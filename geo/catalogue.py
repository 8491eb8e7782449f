"""The default incident category catalogue (事件分类), with department and time limit.

Time limits are in working hours (see the incident workflow); deployments may replace the
catalogue in the database, this is what ships.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IncidentCategory:
    code: str
    name: str
    department: str
    time_limit_hours: float


INCIDENT_CATEGORIES: tuple[IncidentCategory, ...] = (
    IncidentCategory("dispute", "矛盾纠纷", "综治中心", 40),
    IncidentCategory("public_order", "治安", "公安派出所", 8),
    IncidentCategory("traffic", "交通事故", "交警大队", 4),
    IncidentCategory("environment", "市容环境", "城管局", 24),
    IncidentCategory("facility", "公共设施", "住建局", 40),
    IncidentCategory("safety_hazard", "安全隐患", "应急管理局", 16),
    IncidentCategory("petition", "信访诉求", "信访局", 80),
    IncidentCategory("other", "其他", "综治中心", 40),
)
CATEGORY_BY_CODE = {category.code: category for category in INCIDENT_CATEGORIES}

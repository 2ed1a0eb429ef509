"""The ExperimentService servicer: translates GetExperimentReport to the analysis and back.

Errors are not caught here: meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

import grpc

from control.app.experiments import ExperimentAnalysis, definition_text
from mesh.control.v1 import control_pb2 as pb
from mesh.control.v1 import control_pb2_grpc as pb_grpc


class ExperimentServicer(pb_grpc.ExperimentServiceServicer):
    """mesh.control.v1.ExperimentService over the experiment analysis. Stateless."""

    def __init__(self, analysis: ExperimentAnalysis) -> None:
        self._analysis = analysis

    def GetExperimentReport(
        self, request: pb.GetExperimentReportRequest, context: grpc.ServicerContext
    ) -> pb.GetExperimentReportResponse:
        """See the contract in proto/mesh/control/v1/control.proto."""
        report = self._analysis.report(request.key, request.metric)
        check = report.sample_ratio
        return pb.GetExperimentReportResponse(
            report=pb.ExperimentReport(
                key=report.key,
                metric=report.metric,
                control=report.control,
                variants=[
                    pb.VariantReport(
                        variant=v.variant,
                        weight=v.weight,
                        units=v.units,
                        conversions=v.conversions,
                        rate=v.rate,
                        difference=v.difference,
                        ci_low=v.ci_low,
                        ci_high=v.ci_high,
                        p_value=v.p_value,
                    )
                    for v in report.variants
                ],
                sample_ratio=pb.SampleRatioCheck(
                    chi_square=check.chi_square,
                    degrees_of_freedom=check.degrees_of_freedom,
                    p_value=check.p_value,
                    mismatch=check.mismatch,
                ),
                definition=definition_text(report),
            )
        )

"""The same device and server with Flower's SecAgg+ (the legacy workflow API, which is where
flwr 1.42 keeps SecAgg+): `secaggplus_mod` on the client, `SecAggPlusWorkflow` in the server's
DefaultWorkflow, every client sharing with all six (num_shares 6) and any four reconstructing.
The training is client_app.py's."""

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from genoflwr.client_app import fit, local_data

torch.set_num_threads(1)


class LogRegClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple:
        x, y = local_data(self.context)
        model = torch.nn.Linear(x.shape[1], 1)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(parameters[0]))
            model.bias.copy_(torch.from_numpy(parameters[1]))
        fit(model, x, y, self.context)
        return ([model.weight.detach().numpy(), model.bias.detach().numpy()], len(x), {})


client = ClientApp(client_fn=lambda context: LogRegClient(context).to_client(),
                   mods=[secaggplus_mod])
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["num-nodes"])
    torch.manual_seed(0)
    model = torch.nn.Linear(int(cfg["sites"]), 1)
    init = [model.weight.detach().numpy(), model.bias.detach().numpy()]
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_evaluate_clients=0, min_available_clients=n,
                      initial_parameters=ndarrays_to_parameters(init))
    legacy = LegacyContext(context=context,
                           config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])),
                           strategy=strategy)
    DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=4)
                    )(grid, legacy)

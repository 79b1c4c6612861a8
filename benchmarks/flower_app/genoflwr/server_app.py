"""The server: FedAvg over every node for the configured rounds, no evaluation on the nodes
(genofed's rounds evaluate nothing on the devices either)."""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["num-nodes"])
    torch.manual_seed(0)
    model = torch.nn.Linear(int(cfg["sites"]), 1)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                      min_evaluate_nodes=0, min_available_nodes=n)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({}))

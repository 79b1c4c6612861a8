"""The device: the demo's logistic regression (nn.Linear(sites, 1), BCE with logits, plain
SGD, the demo's epochs, batch size and learning rate) on the features genofed's agent trains
on (its standardized dosages, written by the benchmark to the npz named by the node config's
`data`)."""

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

torch.set_num_threads(1)  # as the agent's `threads = 1`
app = ClientApp()


def local_data(context: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """The node's features and labels (the npz its config names)."""
    data = np.load(str(context.node_config["data"]))
    return torch.from_numpy(data["x"]), torch.from_numpy(data["y"])


def fit(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, context: Context) -> None:
    """The demo's local training: epochs of plain SGD on shuffled batches, BCE with logits."""
    cfg = context.run_config
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(int(context.node_config.get("seed", 0)))
    batch = int(cfg["batch-size"])
    for _ in range(int(cfg["local-epochs"])):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(
                model(x[idx]).squeeze(1), y[idx]).backward()
            opt.step()


def _train(msg: Message, context: Context) -> Message:
    x, y = local_data(context)
    model = torch.nn.Linear(x.shape[1], 1)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    fit(model, x, y, context)
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord({"num-examples": len(x)})}),
                   reply_to=msg)


app.train()(_train)

"""pymodbus's TCP and serial servers, answering each request under its own address.

pymodbus's request handler keeps the request it is answering in one attribute
(``last_pdu``) and reads the unit id and transaction id from it only after the
datastore has answered. Our datastore delays a unit with the slow fault, so a
request for the next unit arriving meanwhile overwrote that attribute and the
slow unit's late answer went out under the next unit's id and transaction id:
its values landed on its neighbour. No real device answers in another's name,
so the handler here binds each answer to the request it was made for.
"""

from __future__ import annotations

import logging
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

log = logging.getLogger(__name__)


class RequestBoundHandler(ServerRequestHandler):
    """A connection's handler that answers each request with that request's ids."""

    def handle_later(self) -> None:
        # Taken now, while they are still this request's, not after the datastore's await.
        request, addr = self.last_pdu, self.last_addr
        if request is not None:
            self.loop.create_task(self._answer(request, addr))

    async def _answer(self, request: Any, addr: Any) -> None:
        try:
            response = await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            return  # a dead unit on a bus is silent (the servers ignore missing devices)
        except Exception:
            log.exception("simulated unit %s failed to answer", request.dev_id)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _RequestBound:
    """Mixin: new connections get a :class:`RequestBoundHandler`."""

    trace_packet: Any
    trace_pdu: Any
    trace_connect: Any

    def callback_new_connection(self) -> RequestBoundHandler:
        return RequestBoundHandler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class SimTcpServer(_RequestBound, ModbusTcpServer):
    """Modbus TCP (or RTU over TCP) server for simulated units."""


class SimSerialServer(_RequestBound, ModbusSerialServer):
    """Modbus RTU server on a serial line for simulated units."""
